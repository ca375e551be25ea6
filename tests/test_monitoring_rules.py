"""The SLO alert rules (infra/monitoring) are valid, unit-tested, and each has a runbook.

promtool does the checking: ``check rules``, ``check config`` and ``test rules`` (each alert
fires on a series that breaks its objective and stays silent on a healthy one). ``make setup``
installs it (scripts/setup.sh); a machine without it fails here, saying so, rather than
skipping: an alert nobody has tested is not one on-call can trust.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "infra" / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
TEST_FILES = sorted((MONITORING / "tests").glob("*.test.yml"))
RUNBOOKS = REPO / "docs" / "runbooks"


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.fail("promtool not found: run `make setup` (installs Debian's prometheus "
                    "package) or `apt-get install prometheus`, or set PROMTOOL to its path")
    return found


def run_promtool(*args: str | Path) -> None:
    done = subprocess.run([promtool(), *map(str, args)], cwd=MONITORING, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"


def alerts() -> list[dict]:
    return [rule for path in RULE_FILES
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def test_rules_are_valid() -> None:
    assert RULE_FILES
    run_promtool("check", "rules", *RULE_FILES)


def test_prometheus_config_is_valid() -> None:
    run_promtool("check", "config", "prometheus.yml")


def test_alert_rules_unit_tests_pass() -> None:
    assert TEST_FILES
    run_promtool("test", "rules", *TEST_FILES)


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = [case for path in TEST_FILES
             for group in yaml.safe_load(path.read_text())["tests"]
             for case in group.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


def test_every_alert_has_a_runbook_that_exists() -> None:
    for alert in alerts():
        url = alert.get("annotations", {}).get("runbook_url")
        assert url, f"{alert['alert']}: no runbook_url annotation"
        page = REPO / url
        assert page.parent == RUNBOOKS and page.is_file(), \
            f"{alert['alert']}: runbook_url {url} is not a page in docs/runbooks/"

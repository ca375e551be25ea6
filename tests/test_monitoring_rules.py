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


def test_every_metric_the_rules_and_dashboards_read_is_exported_by_code() -> None:
    """A rule on a metric nothing exports stays silent for ever; so does a dashboard panel.
    Each name read must be a string some exporter declares (a ``_bucket``/``_count``/``_sum``
    series by its histogram's name); Flink's names come from its own reporter, enabled in
    infra/local/flink/config.yaml."""
    import json
    import re

    exprs = [rule["expr"] for path in RULE_FILES
             for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]
    exprs += [target["expr"] for board in (MONITORING / "dashboards").glob("*.json")
              for panel in json.loads(board.read_text())["panels"]
              for target in panel.get("targets", [])]
    read = {name for expr in exprs
            for name in re.findall(r"(?<![:\w])(?:mercury|context|flink)_[A-Za-z0-9_]+", expr)}
    code = "\n".join(path.read_text() for folder in ("mercury", "plugins", "spark_jobs")
                     for path in (REPO / folder).rglob("*.py"))
    assert "PrometheusReporterFactory" in (REPO / "infra/local/flink/config.yaml").read_text()
    missing = sorted(name for name in read if not name.startswith("flink_")
                     and f'"{name}"' not in code
                     and f'"{re.sub(r"_(bucket|count|sum)$", "", name)}"' not in code)
    assert read and not missing, f"read by rules or dashboards, exported by nothing: {missing}"

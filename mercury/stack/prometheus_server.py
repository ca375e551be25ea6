"""Prometheus: scrapes the context API, Flink's reporter and the freshness probe, and evaluates
the SLO rules of infra/monitoring/rules (the same files production loads).

The committed ``infra/monitoring/prometheus.yml`` is the source; the running config is written
under the run dir with this config's ports and absolute rule paths, so a test's stack on other
ports scrapes its own services.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import requests
import yaml

from mercury.config import REPO_ROOT, Settings
from mercury.stack.base import Component, Health, StackError

MONITORING_DIR = REPO_ROOT / "infra" / "monitoring"


def scrape_config(settings: Settings) -> dict[str, Any]:
    """The committed Prometheus config with this config's ports, intervals and absolute rule
    paths."""
    config = yaml.safe_load((MONITORING_DIR / "prometheus.yml").read_text())
    monitoring = settings.monitoring
    config["global"].update(scrape_interval=f"{monitoring.scrape_interval_s}s",
                            evaluation_interval=f"{monitoring.evaluation_interval_s}s")
    config["rule_files"] = [str(MONITORING_DIR / path) for path in config["rule_files"]]
    ports = {"context-api": [settings.serving.port],
             "freshness-probe": [settings.monitoring.probe_port]}
    for job in config["scrape_configs"]:
        if job["job_name"] in ports:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{p}"
                                                  for p in ports[job["job_name"]]]}]
    return config


class PrometheusServer(Component):
    name = "prometheus"
    start_timeout_s = 30.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.monitoring.prometheus_port}"

    def health(self) -> Health:
        try:
            ready = requests.get(f"{self.url}/-/ready", timeout=2)
            groups = requests.get(f"{self.url}/api/v1/rules", timeout=2).json()["data"]["groups"]
        except (requests.RequestException, ValueError, KeyError) as exc:
            return Health(self.name, False, f"no answer at {self.url}: {type(exc).__name__}")
        if ready.status_code != 200:
            return Health(self.name, False, f"{self.url} is not ready: {ready.text.strip()}")
        rules = sum(len(g["rules"]) for g in groups)
        return Health(self.name, True, f"{self.url} {len(groups)} rule groups, {rules} rules")

    def launch(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise StackError("prometheus is not installed: apt-get install prometheus "
                             "(`make setup` does)")
        folder = Path(self.settings.data_dir) / "prometheus"
        folder.mkdir(parents=True, exist_ok=True)
        config = self.settings.run_dir / "prometheus.yml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(scrape_config(self.settings), sort_keys=False))
        self.spawn([binary, f"--config.file={config}", f"--storage.tsdb.path={folder}",
                    f"--web.listen-address=127.0.0.1:{self.settings.monitoring.prometheus_port}",
                    "--web.enable-lifecycle", "--storage.tsdb.retention.time=7d"],
                   "prometheus.log")

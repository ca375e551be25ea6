"""Prometheus, Alertmanager and a node exporter. Prometheus scrapes the context API, Flink's
reporter, the freshness probe and the batch jobs' metric files (through the node exporter's
textfile collector), evaluates the SLO rules of infra/monitoring/rules (the same files production
loads) and sends what fires to Alertmanager, where Airflow's failure pages also go.

The committed ``infra/monitoring/prometheus.yml`` is the source; the running config is written
under the run dir with this config's ports and absolute rule paths, so a test's stack on other
ports scrapes its own services.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
             "freshness-probe": [settings.monitoring.probe_port],
             "batch-metrics": [settings.monitoring.textfile_exporter_port]}
    alertmanager = urlsplit(monitoring.alertmanager_url)
    config["alerting"] = {"alertmanagers": [{"scheme": alertmanager.scheme, "static_configs": [
        {"targets": [alertmanager.netloc]}]}]}
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


class AlertmanagerServer(Component):
    name = "alertmanager"
    start_timeout_s = 30.0

    @property
    def url(self) -> str:
        return self.settings.monitoring.alertmanager_url

    def health(self) -> Health:
        try:
            ready = requests.get(f"{self.url}/-/ready", timeout=2)
        except requests.RequestException as exc:
            return Health(self.name, False, f"no answer at {self.url}: {type(exc).__name__}")
        if ready.status_code != 200:
            return Health(self.name, False, f"{self.url} is not ready")
        return Health(self.name, True, f"{self.url} ready")

    def launch(self) -> None:
        where = urlsplit(self.url)
        if where.hostname not in ("127.0.0.1", "localhost"):
            raise StackError(f"alertmanager at {self.url} is down and is not local: fix "
                             "monitoring.alertmanager_url or start it there")
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise StackError("alertmanager is not installed: apt-get install "
                             "prometheus-alertmanager (`make setup` does)")
        folder = Path(self.settings.data_dir) / "alertmanager"
        folder.mkdir(parents=True, exist_ok=True)
        # --cluster.listen-address= (empty): one local instance, no gossip port to collide on
        self.spawn([binary, f"--config.file={MONITORING_DIR / 'alertmanager.yml'}",
                    f"--storage.path={folder}",
                    f"--web.listen-address={where.hostname}:{where.port or 9093}",
                    "--cluster.listen-address="], "alertmanager.log")


class TextfileExporter(Component):
    """Debian's node exporter with only its textfile collector: it serves the ``.prom`` files
    written to ``settings.metrics_dir`` (the anomaly gate, the drift job, the lake loads, the
    knowledge indexer, the consistency job, Airflow task outcomes). In production the jobs run
    on MWAA workers and EMR, whose files nothing scrapes: there they push the same families to
    a Pushgateway, the batch-metrics target (``mercury.metrics_file``; not built yet)."""
    name = "node-exporter"
    start_timeout_s = 15.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.monitoring.textfile_exporter_port}"

    def health(self) -> Health:
        try:
            answer = requests.get(f"{self.url}/metrics", timeout=2)
        except requests.RequestException as exc:
            return Health(self.name, False, f"no answer at {self.url}: {type(exc).__name__}")
        if answer.status_code != 200:
            return Health(self.name, False, f"{self.url}/metrics answered {answer.status_code}")
        return Health(self.name, True, f"{self.url} serving {self.settings.metrics_dir}")

    def launch(self) -> None:
        binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        if binary is None:
            raise StackError("the node exporter is not installed: apt-get install "
                             "prometheus-node-exporter (`make setup` does)")
        self.settings.metrics_dir.mkdir(parents=True, exist_ok=True)
        self.spawn([binary, "--collector.disable-defaults", "--collector.textfile",
                    f"--collector.textfile.directory={self.settings.metrics_dir}",
                    f"--web.listen-address={self.url.removeprefix('http://')}"],
                   "node-exporter.log")

"""The local stack's monitoring, real (Debian's binaries): Prometheus scraping the freshness
probe with the committed SLO rules loaded (incident drills: a dead-letter spike, Redis down, the
streaming job stopped; the dashboards' queries checked against it), and Alertmanager receiving
Airflow's failure pages.

The probe writes canaries into the real file event log and reads the real Redis. What stands
in for the Flink job here is the platform's own Python streaming executor, run in a thread
(consume the log, fold, write the store): starting the Flink job would add a minute and a
second cluster's worth of memory to this test, and the drill is about the probe, the scrape
and the rules. Stopping that thread is the outage. Redis is a private one (tests.serving_fixtures):
stopping it touches no one else's, and it restarts on the same port.

Not asserted: the alert reaching ``firing`` (its ``for: 2m`` would add two minutes to the
suite) and resolving (its 5-minute window must fill with good canaries again); the rules'
own timing is unit-tested by promtool (tests/test_monitoring_rules.py).
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from mercury.config import load_settings
from tests.conftest import free_port, write_config

RULE = "slo:transaction_freshness:error_ratio_rate5m"


class PythonStreamingJob:
    """The Python executor folding the log's transactions into the store, until stopped."""

    def __init__(self, settings):
        from mercury.eventlog import open_consumer
        from mercury.features.definition.compile import load_compiled
        from mercury.features.executors.streaming.executor import OnlineExecutor
        from mercury.online.factory import open_store

        self.executor = OnlineExecutor(load_compiled(["purchases"])[-1:])
        self.consumer = open_consumer(settings, "drill-job", ["transactions"])
        self.store = open_store(settings)
        self.states: dict = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from mercury.features.executors.reference import valid_record
        from mercury.features.executors.streaming.executor import DictState

        while not self.stop.is_set():
            writes = []
            for message in self.consumer.poll(max_messages=100, timeout_s=0.05):
                record = valid_record(message.stream, message.value)
                for key, _ in self.executor.route(message.stream, record or {}):
                    writes += self.executor.process(key, message.stream, record,
                                                    self.states.setdefault(key, DictState())
                                                    ).writes
            while not self._written(writes):  # the store down: retry, as Flink's writer does
                self.stop.wait(0.2)
            self.consumer.commit()

    def _written(self, writes) -> bool:
        import redis

        if self.stop.is_set():
            return True
        try:
            self.store.write(writes)
            return True
        except redis.RedisError:
            return False


def _query(url: str, expr: str) -> list[dict]:
    answer = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _wait_for(what: str, check, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s:.0f} s")
        time.sleep(1)


def _value(url: str, expr: str) -> float:
    found = _query(url, expr)
    return float(found[0]["value"][1]) if found else 0.0


def _load_with_malformed(settings, good: int, malformed: int) -> None:
    """Transactions into the log, some malformed (a producer deploy gone wrong), then the lake
    loader's run over them: the validator that counts dead letters for Prometheus."""
    import uuid

    from mercury.eventlog import encode_record, open_producer
    from mercury.lake.load import load_stream
    from mercury.monitoring.probe import canary_record

    with open_producer(settings, writer_id="drill") as producer:
        for n in range(good):
            record = canary_record(f"usr_drill_{uuid.uuid4().hex[:12]}", 1_765_000_000_000 + n)
            producer.send("transactions", encode_record(settings, "transactions", record))
        for n in range(malformed):
            producer.send("transactions", b'{"event_id": "evt_%d", "amount": "lots"' % n)
    load_stream(settings, "transactions")


def _dashboards_query_what_exists(url: str, rule_names: set[str]) -> None:
    """Every panel of the provisioned dashboards: Prometheus accepts its expression, and each
    recording rule it reads is one the rules define."""
    import json
    import re

    from mercury.stack.monitoring_servers import MONITORING_DIR

    boards = sorted((MONITORING_DIR / "dashboards").glob("*.json"))
    assert boards
    for board in boards:
        dashboard = json.loads(board.read_text())
        assert dashboard["uid"] and dashboard["title"], board
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                answer = requests.get(f"{url}/api/v1/query", params={"query": target["expr"]},
                                      timeout=5).json()
                assert answer["status"] == "success", (board.name, panel["title"], answer)
                for rule in re.findall(r"slo:[a-z_]+:[a-z_0-9]+", target["expr"]):
                    assert rule in rule_names, (board.name, panel["title"], rule)


def test_a_stalled_pipeline_shows_in_the_freshness_sli_and_alert(tmp_path, monkeypatch):
    from prometheus_client import CollectorRegistry, start_http_server

    from mercury.eventlog import open_producer
    from mercury.monitoring.lag import ConsumerLagCollector
    from mercury.monitoring.probe import FreshnessProbe
    from mercury.online.factory import open_store
    from mercury.stack.monitoring_servers import PrometheusServer, TextfileExporter
    from tests.serving_fixtures import PrivateRedis

    redis = PrivateRedis(tmp_path)
    redis.start()
    path = write_config(tmp_path, online_store={"port": redis.port},
                        serving={"port": free_port()},
                        monitoring={"prometheus_port": free_port(), "probe_port": free_port(),
                                    "textfile_exporter_port": free_port(),
                                    "probe_interval_s": 0.5, "probe_timeout_s": 6.0,
                                    "scrape_interval_s": 1, "evaluation_interval_s": 1,
                                    "consumer_groups": {"drill-job": "transactions"}})
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    settings = load_settings()
    # A batch job's metric file, as the anomaly gate writes it with one hour held
    settings.metrics_dir.mkdir(parents=True)
    (settings.metrics_dir / "quality_gate.prom").write_text(
        'mercury_quality_quarantined_hours{stream="transactions"} 1\n')
    exporter, prometheus = TextfileExporter(settings), PrometheusServer(settings)
    registry, stop_probe = CollectorRegistry(), threading.Event()
    registry.register(ConsumerLagCollector(settings))  # as `mercury monitor probe` does
    server, _ = start_http_server(settings.monitoring.probe_port, addr="127.0.0.1",
                                  registry=registry)
    job = PythonStreamingJob(settings)
    job.thread.start()
    producer = open_producer(settings, writer_id="canary")
    probe = FreshnessProbe(settings, producer, open_store(settings), registry)
    prober = threading.Thread(target=probe.run, args=(stop_probe, lambda lags: None),
                              daemon=True)
    try:
        assert exporter.ensure_up().ok and prometheus.ensure_up().ok
        rules = requests.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert {RULE, "TransactionFreshnessBurn"} <= names  # the committed rules, loaded
        _dashboards_query_what_exists(prometheus.url, names)
        prober.start()

        # Healthy: canaries land within a second; the scraped SLI says no error.
        _wait_for("the probe's target up and canaries scraped", lambda: _query(
            prometheus.url, 'sum(mercury_online_write_lag_seconds_count'
                            '{job="freshness-probe",stream="transactions"}) >= 5'), 60)
        [healthy] = _wait_for("the SLI recorded", lambda: _query(prometheus.url, RULE), 30)
        assert float(healthy["value"][1]) == 0.0
        assert not _query(prometheus.url, 'ALERTS{alertname="TransactionFreshnessBurn"}')
        # The batch jobs' files are scraped through the node exporter, and their alerts live
        _wait_for("the anomaly gate's held hour firing its alert", lambda: _query(
            prometheus.url, 'ALERTS{alertname="AnomalyHourQuarantined",alertstate="firing",'
                            'stream="transactions"}'), 30)

        # Drill: a dead-letter spike. 20% of a producer's transactions malformed, two loader
        # runs (a rate needs two scrapes): the per-stream ratio and its fast-burn alert.
        _load_with_malformed(settings, good=80, malformed=20)
        _wait_for("the loader's counters scraped", lambda: _query(
            prometheus.url, 'mercury_dead_letters_total{stream="transactions",'
                            'validator="lake_loader"} == 20'), 30)
        _load_with_malformed(settings, good=80, malformed=20)
        [spike] = _wait_for("the dead-letter alert pending", lambda: _query(
            prometheus.url, 'ALERTS{alertname="DeadLetterRateBurn",window="fast",'
                            'stream="transactions"}'), 30)
        assert spike["metric"]["alertstate"] == "pending"  # for: 2m, not waited for
        ratio = _value(prometheus.url, 'slo:dead_letters:ratio_rate5m{stream="transactions"}')
        assert 0.1 < ratio <= 0.2  # 20 of 100, diluted by the canaries the loader also read
        assert _value(prometheus.url, 'mercury_lake_rows_loaded_total{stream="transactions"}') \
            >= 160

        # Drill: Redis down. The probe cannot read: canaries count as late at the timeout,
        # the SLI crosses the fast-burn line, the freshness alert goes pending.
        assert not _query(prometheus.url, 'ALERTS{alertname="TransactionFreshnessBurn"}')
        redis.stop()
        _wait_for("the probe's failed reads scraped", lambda: _query(
            prometheus.url, "sum(mercury_freshness_probe_read_errors_total) > 0"), 30)
        _wait_for("the SLI over the fast-burn threshold", lambda: _query(
            prometheus.url, f"{RULE} > 0.144"), 60)
        [alert] = _wait_for("the freshness alert pending", lambda: _query(
            prometheus.url,
            'ALERTS{alertname="TransactionFreshnessBurn",window="fast"}'), 60)
        assert alert["metric"]["alertstate"] in ("pending", "firing")
        # Redis back (same port): the job's retried writes land, canaries are readable again.
        redis.start()
        landed = _value(prometheus.url, "sum(mercury_online_write_lag_seconds_bucket"
                                        '{le="5.0"})')
        _wait_for("canaries landing again after Redis is back", lambda: _query(
            prometheus.url, f'sum(mercury_online_write_lag_seconds_bucket{{le="5.0"}}) '
                            f'>= {landed + 5}'), 60)

        # Drill: the job stops. Canaries stop landing and count as late at the timeout; the
        # job's consumer group lags (the probe measures it from the log at every scrape).
        assert _value(prometheus.url, 'mercury_consumer_lag_messages{group="drill-job"}') < 5
        lost_before = _value(prometheus.url, "mercury_freshness_probe_lost_total")
        job.stop.set()
        job.thread.join(10)
        _wait_for("lost canaries scraped", lambda: _query(
            prometheus.url, f"mercury_freshness_probe_lost_total >= {lost_before + 3}"), 60)
        _wait_for("the job's consumer lag growing", lambda: _query(
            prometheus.url, 'mercury_consumer_lag_messages{group="drill-job",'
                            'stream="transactions"} >= 5'), 30)
        [burning] = _wait_for("the SLI over the fast-burn threshold", lambda: _query(
            prometheus.url, f"{RULE} > 0.144"), 60)
        assert float(burning["value"][1]) > 0.144
        assert _query(prometheus.url,
                      'ALERTS{alertname="TransactionFreshnessBurn",window="fast"}')
    finally:
        stop_probe.set()
        job.stop.set()
        prober.join(10)
        server.shutdown()
        producer.close()
        prometheus.stop()
        exporter.stop()
        redis.stop()


def test_a_failed_task_pages_through_alertmanager(tmp_path, monkeypatch):
    """The failure callback every task gets, called as Airflow calls it (a context with the
    task instance and the exception), against the stack's real Alertmanager."""
    from types import SimpleNamespace

    from mercury.config import REPO_ROOT
    from mercury.stack.monitoring_servers import AlertmanagerServer

    path = write_config(tmp_path, monitoring={
        "alertmanager_url": f"http://127.0.0.1:{free_port()}"})
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    from mercury_airflow.alerting import page_on_failure

    alertmanager = AlertmanagerServer(load_settings())
    try:
        assert alertmanager.ensure_up().ok
        ti = SimpleNamespace(dag_id="gdpr_erasure", task_id="erase_pending",
                             run_id="scheduled__2026-12-07T00:00:00+00:00")
        page_on_failure({"ti": ti, "exception": ValueError("user usr_42 card 4242")})
        alerts = requests.get(f"{alertmanager.url}/api/v2/alerts", timeout=5).json()
        [alert] = alerts
        assert {k: alert["labels"][k] for k in ("alertname", "severity", "dag_id", "task_id")} \
            == {"alertname": "AirflowTaskFailed", "severity": "page",
                "dag_id": "gdpr_erasure", "task_id": "erase_pending"}
        assert alert["status"]["state"] == "active"
        assert "ValueError" in alert["annotations"]["summary"]
        assert "usr_42" not in str(alert) and "4242" not in str(alert)  # no record quoted
        assert (REPO_ROOT / alert["annotations"]["runbook_url"]).is_file()
    finally:
        alertmanager.stop()
    page_on_failure({"ti": ti, "exception": None})  # Alertmanager gone: logged, never raised

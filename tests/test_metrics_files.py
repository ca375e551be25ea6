"""The metrics that batch jobs, Airflow tasks and the probe export for the SLO rules: counters
that survive the process that counts, consumer lag measured at scrape time, a probe that keeps
timing while the store is down."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from mercury.config import REPO_ROOT
from mercury.metrics_file import GAUGE, Family, MetricsFile
from tests.conftest import metric_samples

RUNS = Family("demo_runs_total", "Runs", ("job", "outcome"))
LAST = Family("demo_last_run_timestamp_seconds", "Last run", ("job",), GAUGE)


def test_counters_add_across_processes_and_gauges_are_set(tmp_path):
    path = tmp_path / "metrics" / "demo.prom"
    MetricsFile(path, (RUNS, LAST)).update(add={RUNS.name: {("load", "ok"): 2}},
                                           set_={LAST.name: {("load",): 100.0}})
    # Another process, later: the file is the counter's state.
    MetricsFile(path, (RUNS, LAST)).update(add={RUNS.name: {("load", "ok"): 3,
                                                            ("load", "failed"): 1}},
                                           set_={LAST.name: {("load",): 200.0}})
    assert metric_samples(path) == {
        ("demo_runs_total", frozenset({("job", "load"), ("outcome", "ok")})): 5.0,
        ("demo_runs_total", frozenset({("job", "load"), ("outcome", "failed")})): 1.0,
        ("demo_last_run_timestamp_seconds", frozenset({("job", "load")})): 200.0}
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".prom"] == ["demo.prom"]


def test_parallel_updates_lose_no_count(tmp_path):
    path = tmp_path / "demo.prom"

    def count():
        for _ in range(20):
            MetricsFile(path, (RUNS,)).update(add={RUNS.name: {("t", "ok"): 1}})

    threads = [threading.Thread(target=count) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metric_samples(path)[("demo_runs_total",
                                 frozenset({("job", "t"), ("outcome", "ok")}))] == 100


def test_wrong_updates_are_refused_naming_the_metric(tmp_path):
    with pytest.raises(ValueError, match="only \\*.prom"):
        MetricsFile(tmp_path / "demo.txt", (RUNS,))
    with pytest.raises(ValueError, match="end in _total"):
        Family("demo_runs", "Runs", ("job",))
    metrics = MetricsFile(tmp_path / "demo.prom", (RUNS, LAST))
    with pytest.raises(ValueError, match="no counter named demo_last_run"):
        metrics.update(add={LAST.name: {("load",): 1}})
    with pytest.raises(ValueError, match="demo_runs_total: labels"):
        metrics.update(add={RUNS.name: {("load",): 1}})


def test_task_outcomes_are_counted_per_dag_task_and_outcome(tmp_settings, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    from mercury_airflow.outcomes import METRICS_FILE, count_failure, count_retry, count_success

    ti = SimpleNamespace(dag_id="audit_warehouse", task_id="load_inference_audit")
    for callback in (count_retry, count_retry, count_success, count_failure):
        callback({"ti": ti})
    samples = metric_samples(tmp_settings.metrics_dir / METRICS_FILE)
    task = {("dag_id", "audit_warehouse"), ("task_id", "load_inference_audit")}
    assert {dict(labels)["outcome"]: value for (name, labels), value in samples.items()
            if labels >= task} == {"retry": 2, "success": 1, "failed": 1}
    count_success({})  # no task instance: logged, never raised


def test_the_consistency_score_is_kept_per_feature_until_measured_again(tmp_settings):
    from mercury.features.lifecycle.consistency import ConsistencyReport
    from mercury.features.lifecycle.consistency_metrics import record_report

    first = ConsistencyReport("online")
    for n in range(4):
        first.record("spending.v1", "spend_sum", f"usr_{n}", 0, n, 0 if n == 3 else n)
    first.record("spending.v1", "spend_count", "usr_0", 0, 1, 1)
    first.score_of("spending.v1", "nothing_compared")
    record_report(tmp_settings, first, 100.0)
    second = ConsistencyReport("online")
    second.record("spending.v1", "spend_count", "usr_0", 0, 1, 1)
    record_report(tmp_settings, second, 200.0)

    samples = metric_samples(tmp_settings.metrics_dir / "feature_consistency.prom")
    share = {dict(labels)["feature"]: value for (name, labels), value in samples.items()
             if name == "mercury_feature_consistency_share"}
    assert share == {"spend_sum": 0.75, "spend_count": 1.0}  # no number for no comparison
    assert samples[("mercury_feature_consistency_last_run_timestamp_seconds",
                    frozenset({("kind", "online")}))] == 200.0


def test_consumer_lag_on_the_file_log_is_lines_past_the_committed_positions(tmp_settings):
    from mercury.eventlog import open_consumer, open_producer
    from mercury.monitoring.lag import ConsumerLagCollector

    with open_producer(tmp_settings, writer_id="t") as producer:
        for n in range(10):
            producer.send("knowledge_documents", f'{{"n": {n}}}'.encode())
    with open_consumer(tmp_settings, "knowledge-indexer", ["knowledge_documents"]) as consumer:
        assert len(consumer.poll(max_messages=4)) == 4
        consumer.commit()
    [family] = ConsumerLagCollector(tmp_settings).collect()
    lag = {s.labels["group"]: s.value for s in family.samples}
    assert lag["knowledge-indexer"] == 6
    assert lag["lake-loader.inference_audit"] == 0  # an empty stream


def test_a_consumer_group_on_an_unknown_stream_is_refused(tmp_settings):
    from mercury.monitoring.lag import ConsumerLagCollector

    watched = tmp_settings.model_copy(update={"monitoring": tmp_settings.monitoring.model_copy(
        update={"consumer_groups": {"lake-loader.txns": "txns"}})})
    with pytest.raises(ValueError, match="consumer_groups\\['lake-loader.txns'\\].*txns"):
        ConsumerLagCollector(watched)


def test_the_probe_keeps_timing_while_the_store_is_down(tmp_settings):
    from prometheus_client import CollectorRegistry

    from mercury.eventlog import open_producer
    from mercury.monitoring.probe import FreshnessProbe

    class DownStore:
        def read(self, keys):
            raise ConnectionError("Connection refused")

    now = [0.0]
    registry = CollectorRegistry()
    with open_producer(tmp_settings, writer_id="canary") as producer:
        probe = FreshnessProbe(tmp_settings, producer, DownStore(), registry,
                               clock=lambda: now[0])
        probe.send_canary()
        assert probe.check() == []  # not readable, not yet lost
        now[0] = tmp_settings.monitoring.probe_timeout_s
        assert probe.check() == [tmp_settings.monitoring.probe_timeout_s]  # lost, as late
    assert registry.get_sample_value("mercury_freshness_probe_lost_total") == 1
    assert registry.get_sample_value("mercury_freshness_probe_read_errors_total",
                                     {"error": "ConnectionError"}) == 2

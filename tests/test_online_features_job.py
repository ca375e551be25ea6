"""The online-features job, each engine (Flink SQL; per-event Python operators), on the real
local Flink cluster and Redis, held to the reference executor.

One scenario per engine, because a job start costs ~20 s here: an adversarial stream (5%
duplicates, 10% out of order by up to 10 minutes, 2% late by 1 h to 3 days, 1% malformed, 3%
with unknown new fields); the job is halted right after its first checkpoint, mid-stream,
whatever it had done by then (cancelled, no savepoint); more
data arrives (plus one event 40 days late), and the job is restored.

At the end every user's online values must equal the oracle's, each
malformed record must be exactly one dead letter of the right rule, every valid line must be
staged for the lake exactly once, and the too-late event must be in the late output.

The SQL job also survives a SIGKILL of the TaskManager mid-stream, restored by Flink itself
from its last checkpoint on a new TaskManager, with the same checks.
"""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from mercury.config import load_settings
from mercury.eventlog.file_log import FileEventProducer, FileEventReader
from mercury.features.definition.compile import load_compiled
from mercury.features.executors.agreement import arrivals_from_log, compare, last_arrival
from mercury.generator.knobs import DAY_MS, Knobs
from mercury.generator.manifest import load as load_manifest
from mercury.generator.run import generate
from mercury.online.factory import open_store
from mercury.ops import online_job
from mercury.quality.reconcile import reconcile
from tests.conftest import write_config

pytestmark = pytest.mark.timeout(900)

REDIS_DB = 12  # this test's own database: flushed at start, nothing else lives there
START_MS = Knobs().start_ms
# Checkpoints every second, not every 5 s: each wait for "caught up" ends with two of them,
# and the stop/restore waits for a first one before it halts the job.
FLINK = {"checkpoint_interval_ms": 1_000}


@pytest.fixture
def job_settings(tmp_path, monkeypatch):
    config = write_config(tmp_path, online_store={"db": REDIS_DB}, flink=FLINK)
    monkeypatch.setenv("MERCURY_CONFIG", str(config))
    settings = load_settings()
    try:
        redis.Redis(port=settings.online_store.port, db=REDIS_DB).flushdb()
    except redis.ConnectionError:
        pytest.skip("no local Redis: run `mercury stack up --only redis,postgres`")
    return settings, config


def _lines(settings, streams) -> int:
    reader = FileEventReader(settings.event_log.root)
    return sum(reader.count(s) for s in streams)


def _too_late_transaction(settings) -> str:
    """A valid AUTH whose event time is 40 days before the stream: beyond every window."""
    event_id = "0badc0de-0000-4000-8000-000000000040"
    record = {"event_id": event_id, "user_id": "usr_too_late", "account_id": "acc_1",
              "merchant_id": "mch_1", "amount": 12.5, "currency": "EUR", "event_type": "AUTH",
              "event_ts": START_MS - 40 * DAY_MS, "ingest_ts": START_MS + 9 * DAY_MS,
              "risk_score": 0.1, "mcc_code": "5411", "country": "DE",
              "purchase_id": "pur_late", "auth_decision": "APPROVED"}
    producer = FileEventProducer(settings.event_log.root, writer_id="late")
    producer.send("transactions", orjson.dumps(record))
    producer.flush()
    return event_id


def _far_future_transaction(settings) -> str:
    """A producer with a clock 45 days fast: an AUTH whose event time is 45 days after its
    arrival. Counted as event time, it would drag the stream's watermark 45 days ahead and
    send every later event to the late output; it must be a dead letter of its own rule."""
    event_id = "0badc0de-0000-4000-8000-000000000045"
    arrival = START_MS + 4 * DAY_MS
    record = {"event_id": event_id, "user_id": "usr_fast_clock", "account_id": "acc_1",
              "merchant_id": "mch_1", "amount": 99.0, "currency": "EUR", "event_type": "AUTH",
              "event_ts": arrival + 45 * DAY_MS, "ingest_ts": arrival, "risk_score": 0.1,
              "mcc_code": "5411", "country": "DE", "purchase_id": "pur_fast",
              "auth_decision": "APPROVED"}
    producer = FileEventProducer(settings.event_log.root, writer_id="fast")
    producer.send("transactions", orjson.dumps(record))
    producer.flush()
    return event_id


def _merged_manifest(paths) -> dict:
    manifests = [load_manifest(p) for p in paths]
    merged = {"malformed": {}}
    for manifest in manifests:
        for kind, notes in manifest["malformed"].items():
            merged["malformed"].setdefault(kind, []).extend(notes)
    return merged


def _assert_equals_reference(settings, feature_sets, streams, min_values: int,
                             later_ms=(30 * 60_000, DAY_MS + 1, 8 * DAY_MS)) -> None:
    """Every user's online values equal the oracle's, as of the last arrival and later."""
    arrivals = arrivals_from_log(FileEventReader(settings.event_log.root), streams)
    end = last_arrival(arrivals)
    report = compare(feature_sets, open_store(settings), arrivals,
                     [end, *(end + ms for ms in later_ms)])
    assert report.ok, report.summary()
    assert report.values > min_values


def _reconciled(settings, manifests):
    """Dead letters against the generator's manifests: none missing, none repeated."""
    outcome = reconcile(_merged_manifest(manifests), settings.event_log.root,
                        ["transactions", "user_activity", "risk_signals"])
    assert not outcome.missing and not outcome.repeated, (outcome.missing[:5],
                                                          outcome.repeated[:5])
    return outcome


def _assert_staged_once(settings, streams, dead_letters: int) -> FileEventReader:
    """Every valid line staged for the lake exactly once; returns the staging reader."""
    staged = FileEventReader(settings.data_dir / "lake_staging")
    positions = [orjson.loads(m.value)["position"] for m in staged.read("validated")]
    assert len(positions) == len(set(positions))
    assert len(positions) == _lines(settings, streams) - dead_letters
    return staged


def _halt(flink_rest, job_id: str) -> str:
    """Stop the job mid-stream, busy, with no warning (a cancel); return what to restore
    from: its last retained checkpoint."""
    checkpoint = online_job.latest_checkpoint_path(flink_rest, job_id)
    flink_rest.cancel(job_id)
    flink_rest.wait_for_state(job_id, ["CANCELED"])
    return checkpoint


@pytest.mark.parametrize("engine", ["sql", "python"])
def test_job_survives_a_stop_and_restore_and_equals_the_reference(flink_rest, job_settings,
                                                                  tmp_path, engine):
    settings, config = job_settings
    feature_sets = load_compiled()
    streams = sorted({fs.source.stream for fs in feature_sets})
    first = Knobs(events=9_000, users=200, seed=11, span_ms=4 * DAY_MS)
    second = Knobs(events=6_000, users=200, seed=12, span_ms=4 * DAY_MS,
                   start_ms=START_MS + 4 * DAY_MS)
    generate(settings, first, tmp_path / "m1.json", with_postgres=False, show_progress=False)

    job_id = online_job.submit(flink_rest, config, "test-online-features", engine=engine)
    try:
        deadline = time.monotonic() + 120
        while flink_rest.checkpoints(job_id)["counts"]["completed"] < 1:
            assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
            time.sleep(0.2)
        checkpoint = _halt(flink_rest, job_id)

        # Mid-stream, before the second half: a record from a producer whose clock is 45
        # days fast. Every event after it must still count.
        far_future_id = _far_future_transaction(settings)
        generate(settings, second, tmp_path / "m2.json", with_postgres=False,
                 show_progress=False)
        job_id = online_job.submit(flink_rest, config, "test-online-features",
                                   savepoint_path=checkpoint, engine=engine)
        assert flink_rest.checkpoints(job_id)["latest"]["restored"]["external_path"] \
            == checkpoint
        # A restored job counts only the lines after its checkpoint: wait for it to settle.
        online_job.wait_caught_up(flink_rest, job_id, None)
        # Written once the watermark has passed the stream, so it is surely too late.
        too_late_id = _too_late_transaction(settings)
        online_job.wait_caught_up(flink_rest, job_id, None)
    finally:
        _halt(flink_rest, job_id)

    _assert_equals_reference(settings, feature_sets, streams, 20_000)
    # Nothing lost: one dead letter per malformed record, rule by rule, none repeated.
    outcome = _reconciled(settings, [tmp_path / "m1.json", tmp_path / "m2.json"])
    # The only dead letter the generator did not inject: the fast clock's, by its own rule.
    dead_letters = [orjson.loads(m.value) for m in
                    FileEventReader(settings.event_log.root).read("transactions.dlq")]
    fast = [d for d in dead_letters if d.get("event_id") == far_future_id]
    assert [d["rule"] for d in fast] == ["event_after_arrival"], fast
    assert len(outcome.unexpected) == 1, outcome.unexpected[:5]
    assert outcome.unexpected[0].startswith("transactions/event_after_arrival@"), \
        outcome.unexpected
    assert sum(outcome.found.values()) >= 100

    # Every valid line staged for the lake exactly once, across the cancel and restore (the
    # fast clock's dead letter among the dead).
    staged = _assert_staged_once(settings, streams, sum(outcome.found.values()))

    late = [orjson.loads(m.value) for m in staged.read("late")]
    assert [entry["record"]["event_id"] for entry in late] == [too_late_id]


def test_the_jobs_warm_start_argument_reaches_its_graph(flink_rest, job_settings):
    """``--warm-start spending.v2`` through ``main`` (the job's own argument path, on the
    cluster): with no warm start in the store the keyed operator refuses to open (PyFlink opens
    it with its Python worker, on the first record), naming the version, instead of streaming
    that version from empty state on top of a backfill."""
    settings, config = job_settings
    _too_late_transaction(settings)  # any valid record: it makes the operator open
    job_id = online_job.submit(flink_rest, config, "test-warm-start-argument",
                               warm_start="spending.v2", wait=False, engine="python")
    try:
        deadline = time.monotonic() + 120
        traces: list[str] = []
        while time.monotonic() < deadline and not traces:
            traces = flink_rest.failure_traces(job_id)
            time.sleep(0.5)
        assert traces, "the job started a warm-start version without its seam"
        assert any("WarmStartMissing" in t and "spending.v2: no warm start" in t
                   for t in traces), flink_rest.failure(job_id)
    finally:
        flink_rest.cancel(job_id)


def test_sql_job_survives_a_taskmanager_kill_mid_stream(flink_cluster, flink_rest,
                                                          job_settings, tmp_path):
    """SIGKILL of the TaskManager while the SQL job works through new data: Flink restores the
    job from its last checkpoint on a new TaskManager. Values equal the reference (nothing
    counted twice), every malformed record is one dead letter, every valid line is staged
    once: what the killed attempt wrote after its checkpoint is replayed idempotently
    (Redis) or was never committed (the part files)."""
    import contextlib
    import os
    import signal

    import psutil

    settings, config = job_settings
    feature_sets = load_compiled()
    streams = sorted({fs.source.stream for fs in feature_sets})
    first = Knobs(events=4_000, users=200, seed=21, span_ms=2 * DAY_MS)
    second = Knobs(events=24_000, users=200, seed=22, span_ms=4 * DAY_MS,
                   start_ms=START_MS + 2 * DAY_MS)
    generate(settings, first, tmp_path / "m1.json", with_postgres=False, show_progress=False)
    job_id = online_job.submit(flink_rest, config, "test-taskmanager-kill", engine="sql")
    try:
        online_job.wait_caught_up(flink_rest, job_id, _lines(settings, streams))
        generate(settings, second, tmp_path / "m2.json", with_postgres=False,
                 show_progress=False)
        before = online_job.progress(flink_rest, job_id).lines_read
        deadline = time.monotonic() + 120
        while online_job.progress(flink_rest, job_id).lines_read < before + 2_000:
            assert time.monotonic() < deadline, "the job did not start on the new data"
            time.sleep(0.05)
        read_before_kill = online_job.progress(flink_rest, job_id).lines_read
        killed = flink_cluster.taskmanager_pids()
        # A lost host takes the TaskManager's Python workers with it; left alone they would
        # outlive the test (and the cluster) as orphans.
        workers = [child.pid for pid in killed
                   for child in psutil.Process(pid).children(recursive=True)]
        for pid in killed + workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        flink_cluster.start_taskmanager()
        deadline = time.monotonic() + 180
        while not flink_rest.checkpoints(job_id)["latest"].get("restored"):
            assert time.monotonic() < deadline, "the job was not restored from a checkpoint"
            time.sleep(0.5)
        flink_rest.wait_until_running(job_id, timeout_s=180)
        # A restored attempt counts only the lines after its checkpoint, which came before
        # the kill: it reads at least what the killed attempt had not.
        online_job.wait_caught_up(flink_rest, job_id,
                                  _lines(settings, streams) - read_before_kill)
    finally:
        _halt(flink_rest, job_id)
    assert killed and not any(pid in flink_cluster.taskmanager_pids() for pid in killed)

    _assert_equals_reference(settings, feature_sets, streams, 20_000)
    outcome = _reconciled(settings, [tmp_path / "m1.json", tmp_path / "m2.json"])
    assert not outcome.unexpected, outcome.unexpected[:5]
    _assert_staged_once(settings, streams, sum(outcome.found.values()))


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own (the pause below would stall every other user of the
    shared one); its port."""
    import shutil
    import socket
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the test's redis-server did not start"
            time.sleep(0.05)
    yield port
    server.terminate()
    server.wait(10)


def test_sql_job_waits_out_an_online_store_that_stops_answering(flink_rest, private_redis,
                                                                  tmp_path, monkeypatch):
    """The online store answers nothing for 30 s mid-stream (CLIENT PAUSE: every command
    waits, as when its host is gone without a reset): the writer times out
    (``online_store.job_timeout_s``) and retries with backoff, Flink's backpressure holds the
    stream, and afterwards every value equals the reference."""
    config = write_config(tmp_path, online_store={"port": private_redis, "db": 0,
                                                  "job_timeout_s": 2.0}, flink=FLINK)
    monkeypatch.setenv("MERCURY_CONFIG", str(config))
    settings = load_settings()
    feature_sets = load_compiled()
    streams = sorted({fs.source.stream for fs in feature_sets})
    generate(settings, Knobs(events=3_000, users=150, seed=31, span_ms=2 * DAY_MS),
             tmp_path / "m1.json", with_postgres=False, show_progress=False)
    job_id = online_job.submit(flink_rest, config, "test-store-pause", engine="sql")
    try:
        online_job.wait_caught_up(flink_rest, job_id, _lines(settings, streams))
        # Every write of the second half meets the pause.
        redis.Redis(port=private_redis).execute_command("CLIENT", "PAUSE", "30000", "ALL")
        paused_at = time.monotonic()
        generate(settings, Knobs(events=12_000, users=150, seed=32, span_ms=3 * DAY_MS,
                                 start_ms=START_MS + 2 * DAY_MS),
                 tmp_path / "m2.json", with_postgres=False, show_progress=False)
        # Caught up means two checkpoints after the last line: a checkpoint waits for the
        # writer's batch, so none completes before the store answers again.
        online_job.wait_caught_up(flink_rest, job_id, _lines(settings, streams),
                                  timeout_s=300)
        assert time.monotonic() - paused_at >= 30
        assert flink_rest.job_state(job_id) == "RUNNING"
        assert not flink_rest.checkpoints(job_id)["latest"].get("restored"), \
            "the job restarted: the writer gave up instead of waiting"
        retries = flink_rest.metric_sums(job_id, "online_write_retries")
        assert sum(retries.values()) >= 3, retries  # 2 s timeouts, backoff 0.1 s .. 5 s
    finally:
        _halt(flink_rest, job_id)

    _assert_equals_reference(settings, feature_sets, streams, 10_000, later_ms=(DAY_MS + 1,))

"""The batch consumers on Kafka: the lake loader, the audit load, the dead-letter replay and
the knowledge indexer's lag, with the production codec (Confluent Avro through a Schema
Registry).

What is not real here, and why: Kafka is librdkafka's built-in mock cluster (no broker can
run on this machine; it does produce, consumer groups and commits), and the Schema Registry
is confluent-kafka's in-process ``mock://`` registry (no registry server here). The lake is
the real local Iceberg catalog. ``tables.upsert`` is wrapped, never replaced, only to produce
records while a load runs.
"""

from __future__ import annotations

import importlib

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from mercury import eventlog
from mercury.config import REPO_ROOT, load_settings
from mercury.eventlog import encode_record, open_consumer, open_producer
from mercury.eventlog.file_log import FileEventConsumer, FileEventProducer
from mercury.lake import tables
from mercury.lake.load import load_stream
from mercury.quality import dead_letters
from mercury.quality.replay import replay_dead_letters
from mercury.retrieval.supervisor import consumer_lag
from tests.conftest import write_config
from tests.lake_fixtures import transaction
from tests.test_audit_warehouse import T0, audit_record
from tests.test_replay import fix_zwg

UNKNOWN_SCHEMA_ID = b"\x00\x00\x00\x03\xe7"  # magic byte, then id 999: never registered


@pytest.fixture
def kafka(tmp_path, monkeypatch):
    """Settings bound to a fresh mock cluster (three brokers) and a fresh mock registry."""
    holder = Producer({"test.mock.num.brokers": 3})
    brokers = holder.list_topics(timeout=10).brokers.values()
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["event_log"] = {"type": "kafka", "security_protocol": "PLAINTEXT",
                        "bootstrap_servers": ",".join(f"{b.host}:{b.port}" for b in brokers),
                        "schema_registry_url": f"mock://{tmp_path.name}",
                        "serialization": "avro", "session_timeout_ms": 6000}
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    yield load_settings()
    holder.flush(5)


def _produce(settings, stream: str, payloads_by_key: list[tuple[str, bytes]]) -> None:
    with open_producer(settings) as producer:
        for key, payload in payloads_by_key:
            producer.send(stream, payload, key=key)


def _avro(settings, records: list[dict], stream: str = "transactions") -> list[tuple[str, bytes]]:
    return [(r["user_id"], encode_record(settings, stream, r)) for r in records]


def _watermarks(settings, topic: str) -> list[tuple[int, int]]:
    probe = Consumer({"bootstrap.servers": settings.event_log.bootstrap_servers,
                      "group.id": "probe"})
    try:
        found = probe.list_topics(topic, timeout=10).topics[topic].partitions
        return [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in sorted(found)]
    finally:
        probe.close()


def _all_messages(settings, topic: str, group: str) -> list:
    with open_consumer(settings, group, [topic]) as consumer:
        return [m for batch in consumer.read_to_end() for m in batch]


def _exported_lag(settings, group: str, stream: str) -> float:
    from mercury.monitoring.lag import ConsumerLagCollector

    watched = settings.model_copy(update={"monitoring": settings.monitoring.model_copy(
        update={"consumer_groups": {group: stream}})})
    [family] = ConsumerLagCollector(watched).collect()
    [sample] = family.samples
    assert sample.labels == {"group": group, "stream": stream}
    return sample.value


def _while_loading(monkeypatch, produce_once) -> None:
    """Runs ``produce_once`` when the load writes its first batch: records that arrive
    while a load runs."""
    real_upsert, done = tables.upsert, []

    def upsert(*args, **kwargs):
        if not done:
            done.append(produce_once())
        return real_upsert(*args, **kwargs)

    monkeypatch.setattr(tables, "upsert", upsert)


def test_lake_loader_reads_to_the_start_watermarks_and_dead_letters_what_it_cannot_read(
        kafka, monkeypatch):
    # Two users: two of the topic's partitions stay empty among the full ones.
    records = [transaction(n, user_id=f"usr_{n % 2}") for n in range(100)]
    good = _avro(kafka, records)
    truncated = good[0][1][:-4]
    bad_currency = orjson.dumps(transaction(100, user_id="usr_0", currency="US$"))  # JSON
    unknown_id = UNKNOWN_SCHEMA_ID + good[1][1][5:]
    _produce(kafka, "transactions", good + [("usr_0", truncated), ("usr_1", bad_currency),
                                           ("usr_1", unknown_id)])
    marks = _watermarks(kafka, "transactions")
    assert sum(high for _, high in marks) == 103 and (0, 0) in marks

    late = [transaction(n, user_id=f"usr_{n % 2}") for n in range(200, 207)]
    _while_loading(monkeypatch, lambda: _produce(kafka, "transactions", _avro(kafka, late)))
    report = load_stream(kafka, "transactions", batch_size=40, now_ms=lambda: 42)

    assert (report.read, report.valid, report.inserted) == (103, 100, 100)
    assert dict(report.dead_letters) == {"bad_avro": 1, "bad_currency": 1,
                                         "unknown_schema_id": 1}
    lake_ids = tables.read(kafka, "transactions").column("event_id").to_pylist()
    assert sorted(lake_ids) == sorted(r["event_id"] for r in records)
    # Committed exactly what was read: the seven written during the load wait. Prometheus
    # sees the same lag from the brokers' watermarks (the probe's collector).
    assert eventlog.group_lag(kafka, "lake-loader.transactions", ["transactions"]) == 7
    assert _exported_lag(kafka, "lake-loader.transactions", "transactions") == 7

    from mercury.contracts import payloads

    letters = [payloads.decode(m.value, eventlog.writer_schemas(kafka))
               for m in _all_messages(kafka, "transactions.dlq", "check-dlq")]
    by_rule = {letter["rule"]: letter for letter in letters}
    assert sorted(by_rule) == ["bad_avro", "bad_currency", "unknown_schema_id"]
    assert dead_letters.raw_payload(by_rule["bad_avro"]) == truncated  # binary, kept byte for byte
    assert by_rule["bad_avro"]["raw_payload_base64"] is True
    assert dead_letters.raw_payload(by_rule["bad_currency"]) == bad_currency
    assert by_rule["bad_currency"]["field"] == "currency"
    assert by_rule["unknown_schema_id"]["failed_at"] == 42
    # The truncated payload was the last of usr_0's partition when the load started.
    topic, partition, offset = by_rule["bad_avro"]["source_position"].split("/")
    assert (topic, int(offset)) == ("transactions", marks[int(partition)][1] - 1)

    again = load_stream(kafka, "transactions")
    assert (again.read, again.valid, again.inserted) == (7, 7, 7)
    assert eventlog.group_lag(kafka, "lake-loader.transactions", ["transactions"]) == 0


def test_audit_load_takes_every_request_of_the_hour(kafka, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))  # as the DAG imports it
    load_audit_stream = importlib.import_module(
        "mercury_airflow.tasks.audit_warehouse").load_audit_stream
    audits = [audit_record(f"req-{i}", T0 + i * 1_000) for i in range(20)]
    _produce(kafka, "inference_audit",
             [(a["request_id"], encode_record(kafka, "inference_audit", a)) for a in audits])
    assert load_audit_stream(kafka, "inference_audit", log=lambda line: None) == {
        "stream": "inference_audit", "read": 20, "valid": 20, "inserted": 20,
        "dead_letters": {}}
    rows = tables.read(kafka, "inference_audit").to_pylist()
    assert sorted(r["request_id"] for r in rows) == sorted(a["request_id"] for a in audits)
    assert eventlog.group_lag(kafka, "lake-loader.inference_audit", ["inference_audit"]) == 0


def test_replay_brings_back_fixed_avro_records_byte_identical(kafka, monkeypatch):
    valid = _avro(kafka, [transaction(n) for n in range(2)])
    zwg = _avro(kafka, [transaction(n, currency="ZWG", country="ZW") for n in range(2, 5)])
    truncated = ("usr_5", zwg[0][1][:-4])
    _produce(kafka, "transactions", valid + zwg + [truncated])
    assert dict(load_stream(kafka, "transactions").dead_letters) == {"bad_currency": 3,
                                                                     "bad_avro": 1}
    fix_zwg(monkeypatch)

    result = replay_dead_letters(kafka, "transactions")
    assert (result.read, result.replayed, result.already_replayed) == (4, 3, 0)
    assert result.still_failing == {"bad_avro": 1}
    values = [m.value for m in _all_messages(kafka, "transactions", "check-replayed")]
    assert sorted(values) == sorted([p for _, p in valid + zwg + zwg] + [truncated[1]])

    reload = load_stream(kafka, "transactions")
    assert (reload.read, reload.inserted, sum(reload.dead_letters.values())) == (3, 3, 0)


def test_knowledge_indexer_lag_is_watermark_minus_committed(kafka):
    stream = "knowledge_documents"
    _produce(kafka, stream, [(f"doc-{i % 3}", b'{"n": %d}' % i) for i in range(12)])
    assert consumer_lag(kafka) == 12  # nothing committed yet

    marks = _watermarks(kafka, stream)
    full = [p for p, (_, high) in enumerate(marks) if high > 0]
    committer = Consumer({"bootstrap.servers": kafka.event_log.bootstrap_servers,
                          "group.id": "knowledge-indexer", "enable.auto.commit": False})
    # Half of the first busy partition done, all of the second.
    done = [TopicPartition(stream, full[0], marks[full[0]][1] // 2),
            TopicPartition(stream, full[1], marks[full[1]][1])]
    committer.commit(offsets=done, asynchronous=False)
    committer.close()
    assert consumer_lag(kafka) == 12 - sum(tp.offset for tp in done)


def test_schema_registry_ids_are_registered_and_looked_up(kafka):
    from mercury.contracts import payloads
    from mercury.eventlog.schema_registry import schema_registry

    registry = schema_registry(kafka.event_log.schema_registry_url)
    payload = encode_record(kafka, "transactions", transaction(1))
    dlq = encode_record(kafka, "transactions.dlq", {"dlq_id": "x", "source_stream": "s",
                        "source_position": "p", "raw_payload": "r", "rule": "not_json",
                        "error_message": "e", "schema_subject": "transaction",
                        "schema_version": 1, "failed_at": 1})
    # The registry's ids (1, 2 in a fresh registry), not the ids derived locally.
    assert (payload[:5], dlq[:5]) == (b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x02")
    assert payloads.decode(payload, registry.writer_schema)["event_id"] == \
        transaction(1)["event_id"]
    with pytest.raises(payloads.UndecodablePayload, match="no schema id 999"):
        payloads.decode(UNKNOWN_SCHEMA_ID + payload[5:], registry.writer_schema)


def test_file_log_read_to_end_leaves_files_written_during_the_read(tmp_path):
    producer = FileEventProducer(tmp_path, writer_id="w", batch_size=3, fsync=False)
    for n in range(5):
        producer.send("s", b'{"n": %d}' % n)
    producer.flush()  # two files: three lines, then two
    reader = FileEventConsumer(tmp_path, "g", ["s"])
    got = []
    for batch in reader.read_to_end(max_messages=2):
        if not got:
            producer.send("s", b'{"n": 5}')
            producer.flush()  # a third file, after the read began
        got += batch
        reader.commit()
    assert [orjson.loads(m.value)["n"] for m in got] == [0, 1, 2, 3, 4]
    rest = [m for batch in FileEventConsumer(tmp_path, "g", ["s"]).read_to_end()
            for m in batch]
    assert [orjson.loads(m.value)["n"] for m in rest] == [5]


def test_knowledge_changes_in_avro_reach_the_indexer_as_documents(kafka):
    from mercury.retrieval.documents import Document, Rejected, parse_change
    from tests.test_knowledge_chunks import LANGS, change

    payload = encode_record(kafka, "knowledge_documents", change())
    parsed = parse_change(payload, LANGS, 100_000, eventlog.writer_schemas(kafka))
    assert isinstance(parsed, Document) and (parsed.doc_id, parsed.title) == ("policy-x-en",
                                                                             "Fees")
    damaged = parse_change(payload[:-6], LANGS, 100_000, eventlog.writer_schemas(kafka))
    assert isinstance(damaged, Rejected) and damaged.verdict.rule == "bad_avro"

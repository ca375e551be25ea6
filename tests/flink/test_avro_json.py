"""AVRO_JSON (infra/flink-udf), the SQL job's Kafka decoder, against fastavro and the contract's
validator, in batch mode (no cluster, no Kafka: the connector jar cannot run here).

Payloads are in the Confluent wire format that the registry-backed producer writes
(``wire.encode`` under each version's id): the generator's valid and schema-evolved records
under every version of their subject, then damaged ones. Each payload must give, through the
raw view the job declares on Kafka (``flink_kafka.raw_view_sql``), a line whose verdict and
record equal the validator's on the payload itself; what the Java decoder does not render must
reach the validator as the payload's exact bytes. tests/test_flink_kafka_tables.py holds the
registry lookups and the DDL on librdkafka's mock cluster.
"""

from __future__ import annotations

import math
import os
from datetime import datetime

import orjson
import pytest

pytest.importorskip("pyflink.table", reason="PyFlink lives in the Flink env "
                    "(infra/envs/flink/.venv); tests/test_flink_env.py runs these tests there")

from pyflink.datastream import StreamExecutionEnvironment  # noqa: E402
from pyflink.table import (  # noqa: E402
    DataTypes,
    EnvironmentSettings,
    StreamTableEnvironment,
    TableEnvironment,
)

from mercury.config import KafkaEventLogConfig  # noqa: E402
from mercury.contracts import registry, schemas, wire  # noqa: E402
from mercury.contracts.validation import validator  # noqa: E402
from mercury.eventlog import flink_kafka  # noqa: E402
from mercury.features.executors.flinksql.udfs import raw_payload  # noqa: E402
from tests.flink.java_functions import register_java_functions  # noqa: E402

STREAMS = ("transactions", "user_activity", "risk_signals", "user_profile_cdc")
TRANSACTION = {
    "event_id": "0badc0de-0000-4000-8000-000000000001", "user_id": "usr_1",
    "account_id": "acc_1", "merchant_id": "mch_1", "amount": 12.5, "currency": "EUR",
    "event_type": "AUTH", "event_ts": 1_793_491_659_648, "ingest_ts": 1_793_491_661_261,
    "risk_score": 0.37, "mcc_code": "5411", "country": "DE"}
KAFKA = KafkaEventLogConfig(bootstrap_servers="mock", schema_registry_url="mock://t",
                            security_protocol="PLAINTEXT")


def _local_id(subject: str, text: str) -> int | None:
    stream = subject.removesuffix("-value")
    for version in schemas.versions(registry.stream(stream).schema_subject):
        loaded = schemas.load(registry.stream(stream).schema_subject, version)
        if loaded.canonical() == text:
            return loaded.schema_id
    return None


@pytest.fixture(scope="module")
def t_env():
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "1")
    register_java_functions(t_env)
    return t_env


def _records(tmp_path_factory) -> dict[str, list[dict]]:
    """The generator's records that its contract accepts (evolved ones with unknown fields
    included): the Avro producer can only write what fits a schema."""
    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventReader
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from tests.conftest import write_config

    os.environ["MERCURY_CONFIG"] = str(write_config(tmp_path_factory.mktemp("avro_json")))
    settings = load_settings()
    generate(settings, Knobs(events=800, users=40, seed=11, malformed_rate=0.0,
                             evolved_rate=0.2), with_postgres=False, show_progress=False)
    reader = FileEventReader(settings.event_log.root)
    out = {}
    for stream in STREAMS:
        check = validator(registry.stream(stream).schema_subject)
        found = [orjson.loads(m.value) for m in reader.read(stream)] + _changes(stream)
        out[stream] = [r for r in found if check.validate(r).ok][:300]
    return out


def _changes(stream: str) -> list[dict]:
    """Profile changes (the generator writes them through Postgres, not run here): the
    nested envelope, maps and unions in both branches."""
    if stream != "user_profile_cdc":
        return []
    from mercury.cdc.profiles import change_record

    row = {"user_id": "usr_1", "full_name": "Zoë O'Brien", "email": "z@example.com",
           "locale": "fr-FR", "home_country": "FR", "risk_tier": "LOW",
           "kyc_status": "VERIFIED", "notification_prefs": {"email": True, "push": False},
           "updated_at": 1_793_491_200_000}
    changed = {**row, "risk_tier": "HIGH", "notification_prefs": {}}
    where = {"db": "mercury", "schema": "mercury", "table": "user_profiles", "tx_id": 7}
    return [change_record("c", None, row, lsn=1, ts_ms=1_793_491_200_100, **where),
            change_record("u", row, changed, lsn=2, ts_ms=1_793_491_300_100, **where),
            change_record("d", changed, None, lsn=3, ts_ms=1_793_491_400_100, **where)]


def _payloads(records: dict[str, list[dict]]) -> list[tuple[str, bytes]]:
    """Every record under every version of its subject that can hold it."""
    out = []
    for stream, rows in records.items():
        subject = registry.stream(stream).schema_subject
        for version in schemas.versions(subject):
            loaded = schemas.load(subject, version)
            for record in rows:
                try:
                    out.append((stream, wire.encode(record, loaded)))
                except (ValueError, TypeError, KeyError):
                    continue  # a field this older version cannot hold
    return out


def _damaged(stream_payloads: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    stream, good = next((s, p) for s, p in stream_payloads if s == "transactions")
    version = schemas.load(registry.stream("transactions").schema_subject)
    record, _ = wire.decode(good)
    nan = wire.encode({**record, "amount": math.nan}, version)
    accented = wire.encode({**record, "merchant_id": "caf\u00e9"}, version)
    header = good[:5]
    return [(stream, good[:-1]), (stream, good + b"\x00"), (stream, b"\x01" + good[1:]),
            (stream, b"\x00\x7f\xff\xff\xff" + good[5:]), (stream, header),
            (stream, nan), (stream, accented.replace("\u00e9".encode(), b"\xc3\x28")),
            (stream, b'{"event_id": "not avro at all"}')]


def _lines(t_env, payloads: list[bytes], schemas_json: str) -> list[str]:
    """Each payload through the raw view the job declares for a Kafka stream (one query for
    every stream's payloads: the view does not depend on the stream but for its name)."""
    stream = "kafka"
    table = t_env.from_elements(
        [(bytearray(p), 0, i, datetime(2026, 12, 7)) for i, p in enumerate(payloads)],
        DataTypes.ROW([DataTypes.FIELD("payload", DataTypes.BYTES()),
                       DataTypes.FIELD("partition", DataTypes.INT()),
                       DataTypes.FIELD("offset", DataTypes.BIGINT()),
                       DataTypes.FIELD("pt", DataTypes.TIMESTAMP(3))]))
    t_env.create_temporary_view("src_kafka", table)
    t_env.execute_sql(flink_kafka.raw_view_sql("raw_kafka", "src_kafka", stream, KAFKA,
                                               schemas_json))
    try:
        with t_env.sql_query("SELECT line_position, line FROM raw_kafka").execute() \
                .collect() as rows:
            by_position = {r[0]: r[1] for r in rows}
    finally:
        t_env.drop_temporary_view("raw_kafka")
        t_env.drop_temporary_view("src_kafka")
    return [by_position[f"{stream}/0/{i}"] for i in range(len(payloads))]


def test_kafka_lines_give_the_validators_verdicts_on_the_payloads(t_env, tmp_path_factory):
    schemas_json = flink_kafka.writer_schemas_json(_local_id, STREAMS)
    payloads = _payloads(_records(tmp_path_factory))
    damaged = _damaged(payloads)
    assert {s for s, _ in payloads} == set(STREAMS) and len(payloads) > 600
    lines = _lines(t_env, [p for _, p in payloads + damaged], schemas_json)
    checks = {s: validator(registry.stream(s).schema_subject) for s in STREAMS}
    rendered = left = 0
    for (stream, payload), line in zip(payloads + damaged, lines, strict=True):
        check = checks[stream]
        expected = check.validate_bytes(payload, wire.local_writer_schema)
        assert check.validate_bytes(raw_payload(line), wire.local_writer_schema) \
            == expected, (stream, payload)
        if line.startswith(flink_kafka.RAW_PAYLOAD_MARK):
            assert raw_payload(line) == payload  # the bytes as received
            left += 1
        else:
            # Rendered by the JVM: the record fastavro reads with the writer's schema.
            assert orjson.loads(line) == wire.decode(payload)[0]
            rendered += 1
    # Every sound payload is rendered in the JVM; every damaged one is left to the validator.
    assert (rendered, left) == (len(payloads), len(damaged))


def test_the_kafka_binding_declares_its_tables_and_stops_only_at_the_connector(
        tmp_path, monkeypatch):
    """``kafka_tables`` on a streaming TableEnvironment with a ``mock://`` registry: the source
    table is declared with the settings' brokers and the secrets from the environment, and
    the first view over it fails only because the Kafka connector's jar, which the production
    image adds, is not here. The views themselves run on literal rows above."""
    import yaml
    from py4j.protocol import Py4JJavaError

    from flink_jobs.online_features import kafka_tables
    from mercury.config import load_settings
    from mercury.eventlog import encode_record
    from mercury.eventlog.schema_registry import schema_registry
    from tests.conftest import write_config

    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["event_log"] = {"type": "kafka", "security_protocol": "SASL_SSL",
                        "bootstrap_servers": "b-1.example:9096",
                        "schema_registry_url": f"mock://{tmp_path.name}",
                        "sasl_username_env": "T_KAFKA_USER", "sasl_password_env": "T_KAFKA_PW"}
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    monkeypatch.setenv("T_KAFKA_USER", "features")
    monkeypatch.setenv("T_KAFKA_PW", "s3cr3t")
    settings = load_settings()
    registered = encode_record(settings, "transactions", TRANSACTION)
    # What the job's decoder is given: the id the registry holds for the current version.
    found = orjson.loads(flink_kafka.writer_schemas_json(
        schema_registry(settings.event_log.schema_registry_url).registered_id,
        ["transactions"]))
    assert list(found) == [str(int.from_bytes(registered[1:5], "big"))]

    t_env = StreamTableEnvironment.create(
        StreamExecutionEnvironment.get_execution_environment())
    with pytest.raises(Py4JJavaError) as failed:
        kafka_tables(t_env, ["transactions"], settings.event_log, str(tmp_path / "staging"))
    assert "Could not find any factory for identifier 'kafka'" in str(failed.value)
    ddl = "".join(str(r[0]) for r in
                  t_env.execute_sql("SHOW CREATE TABLE src_transactions").collect())
    assert "'topic' = 'transactions'" in ddl and "'value.format' = 'raw'" in ddl
    assert "b-1.example:9096" in ddl
    assert 'username="features" password="s3cr3t"' in ddl  # from the environment, in main

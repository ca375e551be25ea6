"""The two Python steps of the SQL job, as PyFlink functions (Flink env only).

- ``validate_line``: the contract's validator on the lines the SQL fast check did not pass;
  a dead letter with its rule and position, or the cleaned record (as JSON and as tagged
  fields): sensitive unknown fields dropped, card data masked, drops counted.
- ``write_online``: a vectorized function over batches of ``writes`` rows: one pipelined
  round trip to the online store per batch. Flink finishes a Python batch before each
  checkpoint barrier, so every write of a checkpoint's changes is done before it completes.
  An unreachable store is retried with backoff (Flink's backpressure holds the stream) for
  up to ``STORE_PATIENCE_S``; then the job fails and restarts from its last checkpoint.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from pyflink.table import DataTypes
from pyflink.table.udf import ScalarFunction, udf

from mercury.eventlog.flink_kafka import RAW_PAYLOAD_MARK

STORE_PATIENCE_S = 600.0

VERDICT = DataTypes.ROW([
    DataTypes.FIELD("dead_letter", DataTypes.STRING()),
    DataTypes.FIELD("record", DataTypes.STRING()),
    DataTypes.FIELD("fields", DataTypes.MAP(DataTypes.STRING(), DataTypes.STRING()))])


class _Once(ScalarFunction):
    """Not deterministic to the planner, so it is not copied into each use of its result
    (the validator's verdict feeds both the dead letters and the valid records)."""

    def is_deterministic(self) -> bool:
        return False


def raw_payload(line: str) -> bytes:
    """The bytes a line stands for: itself, or the payload a Kafka source marked as raw."""
    if line.startswith(RAW_PAYLOAD_MARK):
        return base64.b64decode(line[len(RAW_PAYLOAD_MARK):])
    return line.encode()


class ValidateLine(_Once):
    """``settings_json`` names the event log: on Kafka a line may carry a raw Confluent Avro
    payload (``flink_kafka.RAW_PAYLOAD_MARK``) that the job's Java decoder left, decoded here
    through the Schema Registry."""

    def __init__(self, settings_json: str | None = None):
        self.settings_json = settings_json

    def open(self, function_context: Any) -> None:
        from mercury.config import Settings
        from mercury.contracts import registry
        from mercury.contracts.validation import validator
        from mercury.eventlog.factory import writer_schemas

        self.validators: dict[str, Any] = {}
        self.registry = registry
        self.validator = validator
        self.writer_schemas = writer_schemas(Settings.model_validate_json(self.settings_json)) \
            if self.settings_json else None
        metrics = function_context.get_metric_group()
        self.dropped_fields = metrics.counter("sensitive_fields_dropped")
        # Per stream, as the lake loader counts (infra/monitoring/rules/data_quality.yml records
        # them as mercury_stream_records_total / mercury_dead_letters_total, validator
        # flink_job): the dead-letter SLI sees the streaming job's verdicts too. Registered here,
        # where Flink takes registrations, for every stream that has a dead-letter stream.
        checked = [s.name for s in registry.STREAMS if s.dead_letter_stream]
        self.validated = {name: metrics.add_group("stream", name).counter("records_validated")
                          for name in checked}
        self.dead_lettered = {name: metrics.add_group("stream", name).counter("dead_letters")
                              for name in checked}

    def eval(self, stream: str, position: str, line: str) -> Any:
        from pyflink.common import Row

        from mercury.features.executors.flinksql.contract import tagged_fields
        from mercury.quality.dead_letters import make_dead_letter

        if stream not in self.validators:
            subject = self.registry.stream(stream).schema_subject
            self.validators[stream] = self.validator(subject)
        raw = raw_payload(line)
        verdict = self.validators[stream].validate_bytes(raw, self.writer_schemas)
        self.validated[stream].inc()
        if not verdict.ok:
            self.dead_lettered[stream].inc()
            letter = make_dead_letter(stream, position, raw, verdict, int(time.time() * 1000))
            return Row(orjson.dumps(letter).decode(), None, None)
        record = verdict.record  # without the sensitive fields the contract dropped
        if verdict.dropped_fields:
            self.dropped_fields.inc(len(verdict.dropped_fields))
        return Row(None, orjson.dumps(record).decode(), tagged_fields(record))


class WriteOnline(_Once):
    def __init__(self, feature_sets_json: str, store_json: str,
                 settings_json: str | None = None) -> None:
        self.feature_sets_json = feature_sets_json
        self.store_json = store_json
        self.settings_json = settings_json  # for the tombstones of erased users

    def open(self, function_context: Any) -> None:
        from pydantic import TypeAdapter

        from mercury.config import OnlineStoreConfig
        from mercury.features.definition.dsl import feature_set_from_dict
        from mercury.features.executors.flinksql.writes import OnlineWrites
        from mercury.online.factory import open_store

        sets = [feature_set_from_dict(d) for d in orjson.loads(self.feature_sets_json)]
        self.writes = OnlineWrites(sets)
        self.store = open_store(TypeAdapter(OnlineStoreConfig).validate_json(self.store_json))
        self.tombstones = None
        if self.settings_json:
            from mercury.config import Settings
            from mercury.privacy.tombstones import Tombstones

            self.tombstones = Tombstones.of(Settings.model_validate_json(self.settings_json))
        metrics = function_context.get_metric_group()
        self.batches = metrics.counter("online_write_batches")
        self.retries = metrics.counter("online_write_retries")

    def eval(self, target: Any, entity_id: Any, kind: Any, name: Any, payload: Any) -> Any:
        import pandas as pd

        # The planner folds constants into each branch of the union: such a column comes as
        # one value (a scalar or a series of one), not a series of the batch's length.
        given = (target, entity_id, kind, name, payload)
        size = max(len(c) if isinstance(c, pd.Series) else 1 for c in given)
        columns = [c if isinstance(c, pd.Series) and len(c) == size
                   else [c.iloc[0] if isinstance(c, pd.Series) else c] * size for c in given]
        rows = zip(*columns, strict=True)
        stones = self.tombstones
        # An erased user's late events write nothing.
        writes = self.writes.key_writes(
            rows if stones is None else (row for row in rows if not stones.erased(row[1])))
        self._write(writes)
        self.batches.inc()
        return pd.Series([len(writes)] * size)

    def _write(self, writes: list[Any]) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        deadline, pause = time.monotonic() + STORE_PATIENCE_S, 0.1
        while True:
            try:
                self.store.write(writes)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise
                self.retries.inc()
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def close(self) -> None:
        self.store.close()


def functions(feature_sets_json: str, store_json: str,
              settings_json: str | None = None) -> dict[str, Any]:
    """The job's Python functions by their SQL name."""
    return {
        "validate_line": udf(ValidateLine(settings_json), result_type=VERDICT),
        "write_online": udf(WriteOnline(feature_sets_json, store_json, settings_json),
                            result_type=DataTypes.BIGINT(), func_type="pandas"),
    }

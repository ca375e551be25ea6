"""Raw payload -> record: the one decode path of every consumer.

A payload is Confluent Avro when it starts with the magic byte 0 (then a 4-byte schema id,
looked up in the Schema Registry on Kafka), JSON otherwise (the local event log, and Kafka with
``serialization: json``). No JSON document starts with a zero byte, so the two never clash.
Avro is read with the writer's schema alone: the validator then fills defaults and reports
unknown fields exactly as it does for JSON, so both formats give equal records and verdicts.
"""

from __future__ import annotations

from typing import Any

import orjson

from mercury.contracts import schemas, wire


class UndecodablePayload(ValueError):
    """The payload holds no record; ``rule`` is what its dead letter says it broke."""

    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule = rule


def decode(raw: bytes | str, writer_schemas: wire.WriterSchemas | None = None) -> dict[str, Any]:
    """The record in ``raw``; ``writer_schemas`` resolves Avro schema ids (none: JSON only)."""
    if isinstance(raw, bytes) and raw[:1] == bytes([wire.MAGIC]):
        return _avro(raw, writer_schemas)
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position, never the text; kept to that
        raise UndecodablePayload("not_json", f"not JSON: {exc.msg} (char {exc.pos})") from exc
    if not isinstance(record, dict):
        raise UndecodablePayload("not_an_object",
                                 f"expected a JSON object, got {type(record).__name__}")
    return record


def _avro(raw: bytes, writer_schemas: wire.WriterSchemas | None) -> dict[str, Any]:
    if writer_schemas is None:
        raise UndecodablePayload("not_json", "a Confluent Avro payload where JSON is expected "
                                             "(this binding has no schema registry)")
    try:
        record, _ = wire.decode(raw, writer_schemas=writer_schemas)
    except schemas.UnknownSchema as exc:
        raise UndecodablePayload("unknown_schema_id", f"writer schema not found: {exc}") from exc
    # What a damaged body makes fastavro raise. Anything else (the registry unreachable) is
    # not the record's fault: it propagates, and the batch is retried instead of dead-lettered.
    except (EOFError, ValueError, IndexError, TypeError, OverflowError) as exc:
        # The exception's kind only: fastavro may quote the bytes it could not read.
        raise UndecodablePayload("bad_avro",
                                 f"not a readable Avro body ({type(exc).__name__})") from exc
    return record

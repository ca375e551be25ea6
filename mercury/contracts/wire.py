"""The Confluent wire format used on Kafka: magic byte 0, a 4-byte big-endian schema id, then
the Avro binary body. Readers decode with the writer's schema (found by id) and resolve to the
reader's schema, so consumers keep working while producers move to newer versions."""

from __future__ import annotations

import io
import struct
from typing import Any, cast

import fastavro

from mercury.contracts import schemas

MAGIC = 0
_HEADER = struct.Struct(">bI")


class WireFormatError(ValueError):
    pass


def _parsed(version: schemas.SchemaVersion) -> Any:  # fastavro's parsed schema
    # Logical types change nothing in the binary; without them timestamps stay epoch
    # milliseconds, exactly as in the JSON event log, so both bindings give equal records.
    return fastavro.parse_schema(_without_logical_types(version.schema))


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_logical_types(n) for n in node]
    if isinstance(node, dict):
        if "logicalType" in node and node.get("type") in ("int", "long", "bytes", "string"):
            return node["type"]
        return {k: _without_logical_types(v) for k, v in node.items()}
    return node


def encode(record: dict[str, Any], version: schemas.SchemaVersion) -> bytes:
    body = io.BytesIO()
    body.write(_HEADER.pack(MAGIC, version.schema_id))
    fastavro.schemaless_writer(body, _parsed(version), record)
    return body.getvalue()


def decode(payload: bytes,
           reader: schemas.SchemaVersion | None = None) -> tuple[dict[str, Any], int]:
    """The record and the writer's schema id; resolved to ``reader`` when given."""
    if len(payload) < _HEADER.size:
        raise WireFormatError(f"payload of {len(payload)} bytes is shorter than the header")
    magic, schema_id = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise WireFormatError(f"magic byte is {magic}, expected {MAGIC}")
    writer = schemas.by_id(schema_id)
    record = fastavro.schemaless_reader(io.BytesIO(payload[_HEADER.size:]), _parsed(writer),
                                        _parsed(reader) if reader else None)
    # Every contract is a record schema, so the body decodes to a dict.
    return cast("dict[str, Any]", record), schema_id

"""The Confluent wire format used on Kafka: magic byte 0, a 4-byte big-endian schema id, then
the Avro binary body. Readers decode with the writer's schema (found by id) and resolve to the
reader's schema, so consumers keep working while producers move to newer versions."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from functools import cache
from typing import Any, cast

import fastavro

from mercury.contracts import schemas

MAGIC = 0
_HEADER = struct.Struct(">bI")


class WireFormatError(ValueError):
    pass


# A schema id -> the writer's schema, parsed (``parse``): the Schema Registry's lookup on
# Kafka, or ``local_writer_schema`` (ids derived from the shipped schemas).
WriterSchemas = Callable[[int], Any]


def parse(schema: dict[str, Any]) -> Any:  # fastavro's parsed schema
    # Logical types change nothing in the binary; without them timestamps stay epoch
    # milliseconds, exactly as in the JSON event log, so both bindings give equal records.
    return fastavro.parse_schema(without_logical_types(schema))


def _parsed(version: schemas.SchemaVersion) -> Any:
    return _parsed_version(version.subject, version.version)


@cache
def _parsed_version(subject: str, version: int) -> Any:
    return parse(schemas.load(subject, version).schema)  # parsed once, not per record


@cache
def local_writer_schema(schema_id: int) -> Any:
    return _parsed(schemas.by_id(schema_id))


def without_logical_types(node: Any) -> Any:
    if isinstance(node, list):
        return [without_logical_types(n) for n in node]
    if isinstance(node, dict):
        if "logicalType" in node and node.get("type") in ("int", "long", "bytes", "string"):
            return node["type"]
        return {k: without_logical_types(v) for k, v in node.items()}
    return node


def encode(record: dict[str, Any], version: schemas.SchemaVersion,
           schema_id: int | None = None) -> bytes:
    """``schema_id`` is the id the registry gave ``version`` (the local id when omitted)."""
    body = io.BytesIO()
    body.write(_HEADER.pack(MAGIC, version.schema_id if schema_id is None else schema_id))
    fastavro.schemaless_writer(body, _parsed(version), record)
    return body.getvalue()


def decode(payload: bytes, reader: schemas.SchemaVersion | None = None, *,
           writer_schemas: WriterSchemas = local_writer_schema) -> tuple[dict[str, Any], int]:
    """The record and the writer's schema id; resolved to ``reader`` when given."""
    if len(payload) < _HEADER.size:
        raise WireFormatError(f"payload of {len(payload)} bytes is shorter than the header")
    magic, schema_id = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise WireFormatError(f"magic byte is {magic}, expected {MAGIC}")
    body = io.BytesIO(payload[_HEADER.size:])
    record = fastavro.schemaless_reader(body, writer_schemas(schema_id),
                                        _parsed(reader) if reader else None)
    if left := len(payload) - _HEADER.size - body.tell():
        raise WireFormatError(f"{left} bytes left over after the record")
    # Every contract is a record schema, so the body decodes to a dict.
    return cast("dict[str, Any]", record), schema_id

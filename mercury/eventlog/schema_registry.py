"""The Confluent Schema Registry as the Kafka binding uses it: register the stream's schema
when producing (subject ``<topic>-value``, Confluent's default naming), look writer schemas up
by id when consuming. ``mock://`` URLs give confluent-kafka's in-process registry (tests).

One client per URL per process: the client caches ids and schemas, and a ``mock://`` registry
exists only inside its client, so a producer and a consumer must share it to meet.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, cast

from mercury.contracts import registry, schemas, wire


class SchemaRegistry:
    def __init__(self, url: str):
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient.new_client({"url": url})
        self._ids: dict[str, int] = {}
        self._writers: dict[int, Any] = {}

    def encode(self, stream: str, record: dict[str, Any]) -> bytes:
        """``record`` in the Confluent wire format, under the id the registry gives the
        stream's current schema (registered on first use; registering again is a no-op)."""
        version = schemas.load(registry.stream(stream).schema_subject)
        if stream not in self._ids:
            from confluent_kafka.schema_registry import Schema

            self._ids[stream] = self._client.register_schema(
                f"{stream}-value", Schema(version.canonical(), "AVRO"))
        return wire.encode(record, version, schema_id=self._ids[stream])

    def registered_id(self, subject: str, schema_text: str) -> int | None:
        """The id under which ``subject`` holds ``schema_text``; None if never registered."""
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return self._client.lookup_schema(subject, Schema(schema_text, "AVRO")).schema_id
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise
            return None

    def writer_schema(self, schema_id: int) -> Any:
        """The parsed writer schema of ``schema_id`` (``wire.WriterSchemas``)."""
        if schema_id not in self._writers:
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            try:
                found = self._client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise  # the registry is unwell: retry later, the record is not at fault
                raise schemas.UnknownSchema(f"the registry has no schema id {schema_id}") from exc
            # An id names an AVRO schema here: every subject is registered with its text.
            self._writers[schema_id] = wire.parse(json.loads(cast(str, found.schema_str)))
        return self._writers[schema_id]


@cache
def schema_registry(url: str) -> SchemaRegistry:
    return SchemaRegistry(url)

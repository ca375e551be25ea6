"""The Kafka binding as the SQL streaming job's tables (production; docs/STREAMING.md,
"Sources by binding").

Text only: no PyFlink here, so the main environment's tests read the DDL the job would run.
A stream's source gives the same view as the file log's (``line``, ``line_position``, ``pt``):
- ``line``: the record as JSON text. Confluent Avro is decoded in the JVM by ``AVRO_JSON``
  (infra/flink-udf) with the writer schemas the registry holds for the contract's versions,
  looked up once here at deploy; a payload it does not render (an id registered after the
  deploy, a damaged body) travels as ``RAW_PAYLOAD_MARK`` + its base64, and the contract's
  validator decodes it through the registry in the job's Python step, so verdicts stay the
  validator's and a dead letter keeps the bytes as received;
- ``line_position``: ``topic/partition/offset``, as every Kafka consumer here names it.
Dead letters go to the stream's ``.dlq`` topic, exactly once (Kafka transactions committed with
the checkpoints). Secrets reach the DDL only in the job's ``main``; ``explain`` prints masks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from mercury.config import KafkaEventLogConfig
from mercury.contracts import registry, schemas, wire

# No JSON text starts with a NUL character, and the Java decoder never returns one.
RAW_PAYLOAD_MARK = "\x00"
CONSUMER_GROUP = "mercury-online-features"
MASKED = "<from the environment>"


def client_options(cfg: KafkaEventLogConfig, username: str = MASKED,
                   password: str = MASKED) -> dict[str, str]:
    """The connector's Kafka client properties; SASL/SCRAM as the Python clients use it."""
    options = {"properties.bootstrap.servers": cfg.bootstrap_servers,
               "properties.security.protocol": cfg.security_protocol}
    if cfg.security_protocol == "SASL_SSL":
        # The SQL connector jar shades the Kafka client under org.apache.flink.kafka.shaded.
        login = "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram." \
                "ScramLoginModule"
        options.update({
            "properties.sasl.mechanism": "SCRAM-SHA-512",
            "properties.sasl.jaas.config":
                f'{login} required username="{username}" password="{password}";'})
    return options


def _with(options: dict[str, str]) -> str:
    return ",\n".join(f"  '{key}' = '{value.replace(chr(39), chr(39) * 2)}'"
                      for key, value in options.items())


def source_ddl(table: str, stream: str, client: dict[str, str]) -> str:
    """Raw record values of ``stream``'s topic with their partition and offset. The group's
    committed offsets decide where a new deployment starts; a restore takes the offsets in
    its checkpoint, so Kafka's commits are only for lag monitoring."""
    options = {"connector": "kafka", "topic": stream, **client,
               "properties.group.id": CONSUMER_GROUP,
               "properties.isolation.level": "read_committed",
               "scan.startup.mode": "group-offsets",
               "properties.auto.offset.reset": "earliest",
               "value.format": "raw"}
    return f"""CREATE TEMPORARY TABLE {table} (
  payload BYTES,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  pt AS PROCTIME()
) WITH (
{_with(options)}
)"""


def raw_view_sql(view: str, table: str, stream: str, cfg: KafkaEventLogConfig,
                 writer_schemas_json: str) -> str:
    """``view`` (line, line_position, pt) over ``table``, the shape of the file log's view."""
    if cfg.serialization == "avro":
        line = (f"COALESCE(AVRO_JSON(payload, '{writer_schemas_json}'), "
                f"CHR({ord(RAW_PAYLOAD_MARK)}) || TO_BASE64(payload))")
    else:
        line = "CAST(payload AS STRING)"
    return f"""CREATE TEMPORARY VIEW {view} AS
SELECT {line} AS line,
       '{stream}/' || CAST(`partition` AS STRING) || '/' || CAST(`offset` AS STRING)
         AS line_position,
       pt
FROM {table}"""


def dead_letter_sink_ddl(table: str, dead_letter_stream: str, client: dict[str, str]) -> str:
    options = {"connector": "kafka", "topic": dead_letter_stream, **client,
               "value.format": "raw",
               "sink.delivery-guarantee": "exactly-once",
               "sink.transactional-id-prefix": f"{CONSUMER_GROUP}-{dead_letter_stream}"}
    return f"""CREATE TEMPORARY TABLE {table} (line STRING) WITH (
{_with(options)}
)"""


def writer_schemas_json(registered_id, streams: Iterable[str]) -> str:
    """``{id: writer schema}`` for every contract version of ``streams`` the registry knows;
    ``registered_id(subject, schema_text)`` gives the id or None. Logical types are dropped
    as ``wire.parse`` drops them: the binary is the same, timestamps stay epoch ms."""
    found: dict[str, object] = {}
    for stream in streams:
        subject = registry.stream(stream).schema_subject
        for version in schemas.versions(subject):
            loaded = schemas.load(subject, version)
            schema_id = registered_id(f"{stream}-value", loaded.canonical())
            if schema_id is not None:
                found[str(schema_id)] = wire.without_logical_types(loaded.schema)
    # A SQL string literal: quotes doubled.
    return json.dumps(found, separators=(",", ":")).replace("'", "''")

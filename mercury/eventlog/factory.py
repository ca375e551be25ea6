"""Picking the binding from configuration, and serialising records for it."""

from __future__ import annotations

import os
from typing import cast

import orjson

from mercury.config import FileEventLogConfig, KafkaEventLogConfig, Settings
from mercury.contracts.wire import WriterSchemas
from mercury.eventlog.base import EventConsumer, EventLogError, EventProducer


def kafka_credentials(cfg: KafkaEventLogConfig) -> tuple[str, str]:
    """SASL's user name and password from the environment variables the config names (empty
    without SASL)."""
    if cfg.security_protocol != "SASL_SSL":
        return "", ""
    for env in (cfg.sasl_username_env, cfg.sasl_password_env):
        if not env or env not in os.environ:
            raise EventLogError(f"Kafka SASL needs the environment variable {env!r} set")
    # Both are set: checked just above.
    return (os.environ[cast(str, cfg.sasl_username_env)],
            os.environ[cast(str, cfg.sasl_password_env)])


def _kafka_client_config(cfg: KafkaEventLogConfig) -> dict:
    conf = {"bootstrap.servers": cfg.bootstrap_servers, "security.protocol": cfg.security_protocol}
    if cfg.security_protocol == "SASL_SSL":
        username, password = kafka_credentials(cfg)
        conf.update({"sasl.mechanisms": "SCRAM-SHA-512",
                     "sasl.username": username, "sasl.password": password})
    return conf


def open_producer(settings: Settings, writer_id: str = "w0") -> EventProducer:
    cfg = settings.event_log
    if isinstance(cfg, FileEventLogConfig):
        from mercury.eventlog.file_log import FileEventProducer

        return FileEventProducer(cfg.root, writer_id=writer_id, batch_size=cfg.batch_size)
    from mercury.eventlog.kafka_log import KafkaEventProducer

    return KafkaEventProducer(_kafka_client_config(cfg))


def open_consumer(settings: Settings, group: str, streams: list[str]) -> EventConsumer:
    cfg = settings.event_log
    if isinstance(cfg, FileEventLogConfig):
        from mercury.eventlog.file_log import FileEventConsumer

        return FileEventConsumer(cfg.root, group, streams)
    from mercury.eventlog.kafka_log import KafkaEventConsumer

    return KafkaEventConsumer({**_kafka_client_config(cfg),
                               "session.timeout.ms": cfg.session_timeout_ms}, group, streams)


def encode_record(settings: Settings, stream_name: str, record: dict) -> bytes:
    """The bytes a binding carries for a record: JSON locally; on Kafka Confluent Avro under
    the id the Schema Registry gives the stream's schema, or JSON."""
    cfg = settings.event_log
    if isinstance(cfg, KafkaEventLogConfig) and cfg.serialization == "avro":
        from mercury.eventlog.schema_registry import schema_registry

        return schema_registry(cfg.schema_registry_url).encode(stream_name, record)
    return orjson.dumps(record)


def writer_schemas(settings: Settings) -> WriterSchemas | None:
    """How consumers find the writer schema of a Confluent Avro payload (``payloads.decode``):
    the Schema Registry on Kafka; none on the file log, which carries JSON only."""
    cfg = settings.event_log
    if isinstance(cfg, FileEventLogConfig):
        return None
    from mercury.eventlog.schema_registry import schema_registry

    return schema_registry(cfg.schema_registry_url).writer_schema


def group_lag(settings: Settings, group: str, streams: list[str]) -> int:
    """Messages of ``streams`` the consumer group has not committed yet."""
    cfg = settings.event_log
    if isinstance(cfg, FileEventLogConfig):
        from mercury.eventlog.file_log import group_lag as file_group_lag

        return file_group_lag(cfg.root, group, streams)
    from mercury.eventlog.kafka_log import group_lag as kafka_group_lag

    return kafka_group_lag(_kafka_client_config(cfg), group, streams)

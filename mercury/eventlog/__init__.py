"""Producing and consuming the platform's streams.

Callers use ``open_producer`` / ``open_consumer`` and the base classes in ``base``; the
binding (the local file event log, or Kafka) comes from configuration.
"""

from mercury.eventlog.base import EventConsumer, EventLogError, EventProducer, Message
from mercury.eventlog.factory import (
    encode_record,
    group_lag,
    open_consumer,
    open_producer,
    writer_schemas,
)

__all__ = ["EventConsumer", "EventLogError", "EventProducer", "Message", "encode_record",
           "group_lag", "open_consumer", "open_producer", "writer_schemas"]

"""The Kafka binding (MSK in production): an idempotent producer keyed by user, and a
consumer group with explicit commits. confluent-kafka is imported here only, so the file
binding works in environments without it."""

from __future__ import annotations

from typing import cast

from mercury.eventlog.base import EventConsumer, EventLogError, EventProducer, Message


class KafkaEventProducer(EventProducer):
    def __init__(self, config: dict):
        from confluent_kafka import Producer

        self._errors: list[str] = []
        # Idempotence (with acks=all) makes the broker drop the producer's own retries, so a
        # network blip never writes a record twice.
        self._producer = Producer({"enable.idempotence": True, "acks": "all",
                                   "linger.ms": 20, "compression.type": "lz4", **config})

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def send(self, stream: str, value: bytes, key: str | None = None) -> None:
        while True:
            try:
                self._producer.produce(stream, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain
        self._producer.poll(0)
        return None

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise EventLogError(f"{remaining} messages still undelivered after {timeout_s}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise EventLogError(f"{len(errors)} deliveries failed, first: {errors[0]}")


class KafkaEventConsumer(EventConsumer):
    def __init__(self, config: dict, group: str, streams: list[str]):
        from confluent_kafka import Consumer

        self._consumer = Consumer({"group.id": group, "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest", **config})
        self._consumer.subscribe(streams)
        self._polled = False

    def poll(self, max_messages: int = 500, timeout_s: float = 1.0) -> list[Message]:
        out = []
        for msg in self._consumer.consume(num_messages=max_messages, timeout=timeout_s):
            if msg.error():
                raise EventLogError(f"consume failed: {msg.error()}")
            key = cast(bytes, msg.key()).decode() if msg.key() is not None else None
            # A consumed message has a topic and a value (confluent-kafka types both Optional).
            out.append(Message(cast(str, msg.topic()), key, cast(bytes, msg.value()),
                               f"{msg.topic()}/{msg.partition()}/{msg.offset()}"))
        self._polled = self._polled or bool(out)
        return out

    def commit(self) -> None:
        if self._polled:
            self._consumer.commit(asynchronous=False)
            self._polled = False

    def close(self) -> None:
        self._consumer.close()

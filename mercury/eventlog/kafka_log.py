"""The Kafka binding (MSK in production): an idempotent producer keyed by user, and a
consumer group with explicit commits. confluent-kafka is imported here only, so the file
binding works in environments without it."""

from __future__ import annotations

import time
from collections.abc import Iterator
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
    """A consumer group with explicit commits of exactly what was returned.

    ``stall_timeout_s`` bounds how long ``read_to_end`` waits without a message while short
    of its end positions (a broker gone): it raises then, so a scheduled load fails loudly
    instead of reporting an empty run.
    """

    def __init__(self, config: dict, group: str, streams: list[str],
                 stall_timeout_s: float = 60.0):
        from confluent_kafka import Consumer

        self._consumer = Consumer({"group.id": group, "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest", **config})
        self.stall_timeout_s = stall_timeout_s
        self._assigned = False  # until the group's first assignment
        self._ends: dict[tuple[str, int], int] = {}  # high watermark when assigned
        self._next: dict[tuple[str, int], int] = {}  # next offset to return
        self._done: dict[tuple[str, int], int] = {}  # returned, not yet committed: offset + 1
        self._streams = streams
        self._consumer.subscribe(streams, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions) -> None:
        # Called inside consume() before fetching starts, so these watermarks are taken
        # before any message of the partition is returned.
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in (consumer.committed(partitions, timeout=10) if partitions else [])}
        for tp in partitions:
            key = (tp.topic, tp.partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            self._ends[key] = high
            self._next[key] = max(low, committed[key])  # no commit yet: -1001, so low
        self._assigned = True

    def _on_revoke(self, consumer, partitions) -> None:
        # Their new owner resumes from the last commit; what was returned but not committed is
        # read again there (writes downstream are idempotent).
        for tp in partitions:
            for offsets in (self._ends, self._next, self._done):
                offsets.pop((tp.topic, tp.partition), None)

    def poll(self, max_messages: int = 500, timeout_s: float = 1.0) -> list[Message]:
        return self._consume(max_messages, timeout_s, bounded=False)

    def read_to_end(self, max_messages: int = 500) -> Iterator[list[Message]]:
        if not self._any_stream_exists():
            return  # nothing was ever written: no partition will be assigned to wait for
        last_progress = time.monotonic()
        try:
            while not (self._assigned and all(self._next[k] >= end
                                              for k, end in self._ends.items())):
                batch = self._consume(max_messages, 0.5, bounded=True)
                if batch:
                    last_progress = time.monotonic()
                    yield batch
                elif time.monotonic() - last_progress > self.stall_timeout_s:
                    short = {f"{t}/{p}": (self._next[t, p], end)
                             for (t, p), end in self._ends.items() if self._next[t, p] < end}
                    raise EventLogError(f"no message for {self.stall_timeout_s}s short of the "
                                        f"end positions (next, end): {short}")
        finally:
            self._consumer.resume(self._consumer.assignment())

    def _any_stream_exists(self) -> bool:
        from confluent_kafka import KafkaError

        topics = self._consumer.list_topics(timeout=10).topics
        return any(s in topics and (topics[s].error is None or topics[s].error.code()
                                    != KafkaError.UNKNOWN_TOPIC_OR_PART) for s in self._streams)

    def _consume(self, max_messages: int, timeout_s: float, bounded: bool) -> list[Message]:
        from confluent_kafka import KafkaError, TopicPartition

        out = []
        for msg in self._consumer.consume(num_messages=max_messages, timeout=timeout_s):
            if msg.error():
                if cast(KafkaError, msg.error()).code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # nothing was ever written to it: nothing to read
                raise EventLogError(f"consume failed: {msg.error()}")
            topic, partition, offset = cast(str, msg.topic()), msg.partition(), msg.offset()
            key = (topic, cast(int, partition))
            end = self._ends.get(key)
            if bounded and end is not None and cast(int, offset) >= end:
                # Written after the read started: leave it (and what follows) for the next
                # read. Seek back, or this consumer would skip it on its next poll.
                self._consumer.seek(TopicPartition(topic, key[1], end))
                self._consumer.pause([TopicPartition(topic, key[1])])
                continue
            self._next[key] = self._done[key] = cast(int, offset) + 1
            raw_key = msg.key()
            # A consumed message has a topic and a value (confluent-kafka types both Optional).
            out.append(Message(topic, raw_key.decode() if raw_key is not None else None,
                               cast(bytes, msg.value()), f"{topic}/{partition}/{offset}"))
        return out

    def commit(self) -> None:
        """Commit the offsets after what was returned (not the fetch position: a read may
        have fetched beyond its end)."""
        from confluent_kafka import TopicPartition

        if self._done:
            self._consumer.commit(offsets=[TopicPartition(t, p, o)
                                           for (t, p), o in self._done.items()],
                                  asynchronous=False)
            self._done = {}

    def close(self) -> None:
        self._consumer.close()


def group_lag(config: dict, group: str, streams: list[str], timeout_s: float = 10.0) -> int:
    """Messages of ``streams`` that ``group`` has not committed: the high watermark minus the
    committed offset (the low watermark when nothing is committed) over every partition.
    Asks the brokers without joining the group, so the members are not rebalanced."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p)
                      for topic in streams
                      for p in probe.list_topics(topic, timeout=timeout_s).topics[topic].partitions]
        lag = 0
        for tp in probe.committed(partitions, timeout=timeout_s):
            low, high = probe.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            lag += high - max(low, tp.offset)
        return lag
    finally:
        probe.close()

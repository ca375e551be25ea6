"""The producer and consumer interfaces every event-log binding implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass


class EventLogError(Exception):
    pass


@dataclass(frozen=True)
class Message:
    stream: str
    key: str | None
    value: bytes
    position: str  # ``stream/file:line`` locally, ``topic/partition/offset`` on Kafka


class EventProducer(ABC):
    """Appends raw payloads to streams. ``flush`` makes everything sent durable and visible."""

    @abstractmethod
    def send(self, stream: str, value: bytes, key: str | None = None) -> str | None:
        """Queue one payload; returns its position when the binding knows it already."""

    @abstractmethod
    def flush(self) -> None: ...

    def close(self) -> None:
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()


class EventConsumer(ABC):
    """Reads streams as a named group; ``commit`` records what ``poll`` returned as done,
    so a consumer of the same group started later resumes right after it."""

    @abstractmethod
    def poll(self, max_messages: int = 500, timeout_s: float = 1.0) -> list[Message]: ...

    @abstractmethod
    def read_to_end(self, max_messages: int = 500) -> Iterator[list[Message]]:
        """Batches of what the streams hold now: from the group's committed positions up to
        the end positions taken when the read starts (on Kafka, the high watermarks right
        after partition assignment). Messages appended meanwhile are left for the next read;
        an empty poll on the way is not the end. ``commit`` between batches marks them done."""

    @abstractmethod
    def commit(self) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        return None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

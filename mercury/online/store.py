"""The online store's small base class and the in-memory fake.

Four operations, as in Feast's online store: write a batch of whole-field overwrites, read
several hashes in one round trip, and get/set the served version of a feature set. Callers
import this base class and get the backend from ``open_store(settings)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from mercury.online import layout


class OnlineStore(ABC):
    @abstractmethod
    def write(self, writes: Sequence) -> None:
        """Apply ``KeyWrite``s: overwrite their fields, delete theirs, renew the TTL."""

    @abstractmethod
    def read(self, keys: Sequence[str]) -> list[dict[str, bytes]]:
        """Every field of each hash (empty dict when missing), in one round trip."""

    @abstractmethod
    def active_versions(self, set_names: Sequence[str]) -> dict[str, int | None]:
        """The served version of each feature set (None when none is active)."""

    @abstractmethod
    def set_active(self, set_name: str, version: int) -> None:
        """Serve ``version`` of ``set_name`` from now on."""


class MemoryOnlineStore(OnlineStore):
    """A dict-backed store for unit tests: TTLs are recorded, not enforced."""

    def __init__(self):
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.ttls: dict[str, int] = {}
        self.pointers: dict[str, int] = {}

    def write(self, writes: Sequence) -> None:
        for w in writes:
            fields = self.hashes.setdefault(w.key, {})
            fields.update(w.set_fields)
            for name in w.delete_fields:
                fields.pop(name, None)
            self.ttls[w.key] = w.ttl_ms

    def read(self, keys: Sequence[str]) -> list[dict[str, bytes]]:
        return [dict(self.hashes.get(k, {})) for k in keys]

    def active_versions(self, set_names: Sequence[str]) -> dict[str, int | None]:
        return {name: self.pointers.get(layout.active_key(name)) for name in set_names}

    def set_active(self, set_name: str, version: int) -> None:
        self.pointers[layout.active_key(set_name)] = version


def open_store(settings) -> OnlineStore:
    from mercury.online.redis_store import RedisOnlineStore

    return RedisOnlineStore(settings.redis)

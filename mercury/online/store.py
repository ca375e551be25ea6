"""The online store's small base class and the in-memory fake.

Four operations, as in Feast's online store: write a batch of whole-field overwrites, read
several hashes in one round trip, and get/set the served version of a feature set. Callers
import this base class and get the backend from ``open_store(settings)``.

Blue/green deployments (``mercury.features.bluegreen``, ``mercury.features.warm_start``) need a
few more, with no default: plain values with a TTL (the warm start's per-entity state and its
marker), a scan of keys by pattern and an expiry on them (retiring a version), and promotion
with a history of pointers (rollback).
"""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

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

    # ---- blue/green ---------------------------------------------------------------------------

    def put_values(self, values: dict[str, bytes], ttl_ms: int) -> None:
        """Set plain (string) keys, each expiring after ``ttl_ms``."""
        raise NotImplementedError

    def get_values(self, keys: Sequence[str]) -> list[bytes | None]:
        raise NotImplementedError

    def scan(self, pattern: str) -> Iterator[str]:
        """Every key matching the glob ``pattern`` (on a cluster: on every primary)."""
        raise NotImplementedError

    def expire(self, keys: Sequence[str], ttl_ms: int) -> int:
        """Expire each key within ``ttl_ms`` (an earlier expiry is kept); how many exist."""
        raise NotImplementedError

    def promote(self, set_name: str, version: int) -> int | None:
        """Serve ``version`` and remember the version it replaces; returns that one."""
        raise NotImplementedError

    def rollback(self, set_name: str) -> tuple[int | None, int] | None:
        """Serve the version before the last promotion again; (replaced, restored), or None
        when no promotion is remembered."""
        raise NotImplementedError

    def pointer_history(self, set_name: str) -> list[int]:
        """Versions served before the current one, oldest first."""
        raise NotImplementedError


class MemoryOnlineStore(OnlineStore):
    """A dict-backed store for unit tests: TTLs are recorded, not enforced."""

    def __init__(self):
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.ttls: dict[str, int] = {}
        self.pointers: dict[str, int] = {}
        self.values: dict[str, bytes] = {}
        self.histories: dict[str, list[int]] = {}

    def write(self, writes: Sequence) -> None:
        for w in writes:
            if w.replace:
                self.hashes.pop(w.key, None)
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

    def put_values(self, values: dict[str, bytes], ttl_ms: int) -> None:
        for key, value in values.items():
            self.values[key] = value
            self.ttls[key] = ttl_ms

    def get_values(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.values.get(k) for k in keys]

    def scan(self, pattern: str) -> Iterator[str]:
        # Redis globs treat only * ? [ ] \ as special, as fnmatch does (braces are literal).
        keys = [*self.hashes, *self.values]
        yield from (k for k in keys if fnmatch.fnmatchcase(k, pattern))

    def expire(self, keys: Sequence[str], ttl_ms: int) -> int:
        found = 0
        for key in keys:
            if key in self.hashes or key in self.values:
                found += 1
                current = self.ttls.get(key)
                self.ttls[key] = ttl_ms if not current else min(current, ttl_ms)
        return found

    def promote(self, set_name: str, version: int) -> int | None:
        before = self.pointers.get(layout.active_key(set_name))
        self.set_active(set_name, version)
        if before is not None and before != version:
            self.histories.setdefault(set_name, []).append(before)
        return before

    def rollback(self, set_name: str) -> tuple[int | None, int] | None:
        history = self.histories.get(set_name)
        if not history:
            return None
        restored = history.pop()
        replaced = self.pointers.get(layout.active_key(set_name))
        self.set_active(set_name, restored)
        return replaced, restored

    def pointer_history(self, set_name: str) -> list[int]:
        return list(self.histories.get(set_name, []))


def open_store(settings) -> OnlineStore:
    from mercury.online.redis_store import RedisOnlineStore

    return RedisOnlineStore(settings.redis)

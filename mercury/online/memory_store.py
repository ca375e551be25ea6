"""A dict-backed online store for unit tests (``online_store.type: memory``): TTLs are
recorded, not enforced; the process is its only reader."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from mercury.online import layout
from mercury.online.store import Hashes, KeyWrite, OnlineStore, Versions

if TYPE_CHECKING:
    from mercury.config import MemoryStoreConfig


class MemoryOnlineStore(OnlineStore):
    def __init__(self, config: MemoryStoreConfig | None = None) -> None:
        self.config = config
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.ttls: dict[str, int] = {}
        self.pointers: dict[str, int] = {}
        self.values: dict[str, bytes] = {}
        self.histories: dict[str, list[int]] = {}
        self.erasures: dict[str, int] = {}

    def fetch(self, keys: Sequence[str], pointer_sets: Sequence[str] = ()
              ) -> tuple[Hashes, Versions]:
        return ([dict(self.hashes.get(k, {})) for k in keys],
                {name: self.pointers.get(layout.active_key(name)) for name in pointer_sets})

    def write(self, writes: Sequence[KeyWrite]) -> None:
        for w in writes:
            if w.replace:
                self.hashes.pop(w.key, None)
            fields = self.hashes.setdefault(w.key, {})
            fields.update(w.set_fields)
            for name in w.delete_fields:
                fields.pop(name, None)
            if w.prune_tiles:
                for name in [n for n in fields if layout.tile_below(n, w.prune_tiles)]:
                    del fields[name]
            self.ttls[w.key] = w.ttl_ms

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

    def delete(self, keys: Sequence[str]) -> int:
        found = 0
        for key in keys:
            found += (self.hashes.pop(key, None) is not None) | (self.values.pop(key, None)
                                                                  is not None)
            self.ttls.pop(key, None)
        return found

    def publish_erasures(self, hashes: Sequence[str], at_ms: int, keep_ms: int) -> None:
        self.erasures.update(dict.fromkeys(hashes, at_ms))
        for name in [h for h, at in self.erasures.items() if at < at_ms - keep_ms]:
            del self.erasures[name]

    def erasures_since(self, after_ms: int) -> list[tuple[str, int]]:
        return [(h, at) for h, at in self.erasures.items() if at > after_ms]

    def expire(self, keys: Sequence[str], ttl_ms: int) -> int:
        found = 0
        for key in keys:
            if key in self.hashes or key in self.values:
                found += 1
                current = self.ttls.get(key)
                self.ttls[key] = ttl_ms if not current else min(current, ttl_ms)
        return found

    def set_active(self, set_name: str, version: int) -> None:
        self.pointers[layout.active_key(set_name)] = version

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

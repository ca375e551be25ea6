"""The online store's small base class: what every backend implements.

A backend stores hashes of whole fields, plain values with a TTL and the served-version
pointers; it knows nothing about features (decoding values is ``ContextReader``'s job, written
once on top of ``fetch``). Callers import this module and get a backend from
``mercury.online.factory.open_store``; the backend is picked by ``online_store.type``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Hashes = list[dict[str, bytes]]
Versions = dict[str, int | None]


@dataclass(frozen=True)
class KeyWrite:
    """Whole fields to overwrite (and delete) in one hash, and its TTL. ``replace`` drops
    every other field first (the hash then holds exactly ``set_fields``). ``prune_tiles``:
    (hop, first index still read) pairs; tile fields of that hop below it are deleted, which
    ever they are (a writer that keeps no list of its tiles: the SQL job's)."""
    key: str
    set_fields: dict[str, bytes]
    delete_fields: tuple[str, ...] = ()
    ttl_ms: int = 0
    replace: bool = False
    prune_tiles: tuple[tuple[int, int], ...] = ()


class OnlineStore(ABC):
    # ---- the read path: one round trip, sync or async ------------------------------------

    @abstractmethod
    def fetch(self, keys: Sequence[str], pointer_sets: Sequence[str] = ()
              ) -> tuple[Hashes, Versions]:
        """Every field of each hash (empty dict when missing) and the served version of each
        set in ``pointer_sets`` (None when none is), in one round trip."""

    async def afetch(self, keys: Sequence[str], pointer_sets: Sequence[str] = ()
                     ) -> tuple[Hashes, Versions]:
        """``fetch`` for an event loop; backends with network I/O override it."""
        return self.fetch(keys, pointer_sets)

    async def aping(self) -> None:  # noqa: B027 - a store in this process always answers
        """One cheap round trip to the backend (raises when it does not answer)."""

    def read(self, keys: Sequence[str]) -> Hashes:
        return self.fetch(keys)[0]

    def active_versions(self, set_names: Sequence[str]) -> Versions:
        return self.fetch((), set_names)[1]

    # ---- writes: whole-field overwrites, safe to repeat -----------------------------------

    @abstractmethod
    def write(self, writes: Sequence[KeyWrite]) -> None:
        """Apply the writes: overwrite their fields, delete theirs, renew the TTL."""

    @abstractmethod
    def put_values(self, values: dict[str, bytes], ttl_ms: int) -> None:
        """Set plain (string) keys, each expiring after ``ttl_ms`` (warm-start state)."""

    @abstractmethod
    def get_values(self, keys: Sequence[str]) -> list[bytes | None]:
        ...

    @abstractmethod
    def scan(self, pattern: str) -> Iterator[str]:
        """Every key matching the glob ``pattern`` (on a cluster: on every primary)."""

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> int:
        """Remove the keys now (erasure); returns how many existed."""

    @abstractmethod
    def publish_erasures(self, hashes: Sequence[str], at_ms: int, keep_ms: int) -> None:
        """Tells serving processes that these users were erased (their erasure hashes), so
        they drop what they cached; entries older than ``keep_ms`` are trimmed."""

    @abstractmethod
    def erasures_since(self, after_ms: int) -> list[tuple[str, int]]:
        """(erasure hash, published at) of erasures published after ``after_ms``."""

    @abstractmethod
    def expire(self, keys: Sequence[str], ttl_ms: int) -> int:
        """Expire each key within ``ttl_ms`` (an earlier expiry is kept); how many exist."""

    # ---- the served-version pointers (blue/green) -----------------------------------------

    @abstractmethod
    def set_active(self, set_name: str, version: int) -> None:
        """Serve ``version`` of ``set_name`` from now on (no history kept)."""

    @abstractmethod
    def promote(self, set_name: str, version: int) -> int | None:
        """Serve ``version`` and remember the version it replaces; returns that one."""

    @abstractmethod
    def rollback(self, set_name: str) -> tuple[int | None, int] | None:
        """Serve the version before the last promotion again; (replaced, restored), or None
        when no promotion is remembered."""

    @abstractmethod
    def pointer_history(self, set_name: str) -> list[int]:
        """Versions served before the current one, oldest first."""

    # ---- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - a store without connections has nothing to do
        """Release connections (a closed store reconnects on next use)."""

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

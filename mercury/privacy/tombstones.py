"""The tombstone check: is this user erased (or being erased)?

Loaders and the streaming job's writer drop the records and writes of such users, so late
data cannot bring an erased user back (a settlement arriving days after the erasure, a dead
letter replayed, a spooled audit record). The register's hashes are reloaded every
``refresh_s``; a user's hash is computed once per process.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mercury.privacy.keys import Keys

if TYPE_CHECKING:
    from mercury.config import Settings


def erasure_hash(keys: Keys, user_id: str) -> str:
    """The tombstone of an erased user: a keyed hash under its own label, so it equals no
    user token (a scan for the token finds nothing) and cannot be reversed without the key,
    yet re-arriving data for the user is recognised. It is the one thing kept about them.
    Under the ``user_index`` key, which never rotates, so a tombstone outlives rotations."""
    label = b"mercury-erasure\x00" + user_id.encode()
    return "eh_" + hmac.new(keys.key("user_index"), label, hashlib.sha256).hexdigest()[:32]


class Tombstones:
    def __init__(self, keys: Keys, load: Callable[[], frozenset[str]], refresh_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._refresh_s = refresh_s
        self._clock = clock
        self._loaded_at = float("-inf")
        self._hashes: frozenset[str] = frozenset()
        self._hash = lru_cache(maxsize=200_000)(lambda user_id: erasure_hash(keys, user_id))

    @classmethod
    def of(cls, settings: Settings, refresh_s: float = 60.0) -> Tombstones:
        from mercury.privacy import erasure_register as register
        from mercury.privacy.keys import load_keys

        return cls(load_keys(settings), lambda: register.erased_hashes(settings), refresh_s)

    def erased(self, user_id: str | None) -> bool:
        """Whether this user id (or user token: both are hashed alike) is tombstoned."""
        if self._clock() - self._loaded_at >= self._refresh_s:
            self._reload()
        return bool(user_id) and bool(self._hashes) and self._hash(user_id) in self._hashes

    def _reload(self) -> None:
        try:
            self._hashes = self._load()
        except Exception:
            # Never loaded: no answer is safe, the caller fails (a job restarts and retries).
            # Loaded before: the list as it was stays in force while the register is down;
            # requests registered meanwhile are caught by the erasure that completes them.
            if self._loaded_at == float("-inf"):
                raise
        self._loaded_at = self._clock()

    def keep(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """The records of users not erased, and how many were dropped."""
        kept = [r for r in records if not self.erased(record_user(r))]
        return kept, len(records) - len(kept)


def record_user(record: dict[str, Any]) -> str | None:
    """The user a record is about: ``user_id``, the ``user_token`` of an audit record, or
    the key of a CDC change (``key`` since contract v2, where a delete carries nothing else;
    ``after``/``before`` in v1)."""
    if user := record.get("user_id") or record.get("user_token"):
        return user
    for image in ("key", "after", "before"):
        if isinstance(record.get(image), dict) and (user := record[image].get("user_id")):
            return user
    return None

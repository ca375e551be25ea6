"""Per-user data keys, for crypto-shredding.

Each user has a random 256-bit data key, stored in Postgres (``privacy.user_keys``) wrapped
under the ring's ``user_kek`` (AES-256-GCM, context: key id and user row), so a dump of the
table alone unmasks nothing. The row is named by ``user_ref``, an HMAC of the user id under
the ring's ``user_index`` key: no user id or token in the table, and stable across
tokenization rotations. Values sealed under a user key name its random ``key_id``; after
``shred_user_keys`` deletes the user's rows nothing can open them again, and a key made later
for the same user has another id, so old values say "erased" rather than fail obscurely.
(Postgres backups and WAL archives keep deleted rows until they expire: their retention must
stay inside the 30 days of an erasure; docs/COMPLIANCE.md.)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mercury.privacy.errors import KeyErased
from mercury.privacy.kms import DATA_KEY_BYTES, aead_unwrap, aead_wrap
from mercury.privacy.schema import CREATE_PRIVACY_SCHEMA

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.privacy.keys import Keys

SCHEMA = CREATE_PRIVACY_SCHEMA + """
create table if not exists privacy.user_keys (
    key_id      text primary key,
    user_ref    text not null,
    version     integer not null,
    kek_version integer not null,
    wrapped     bytea not null,
    created_at  timestamptz not null default now(),
    unique (user_ref, version)
)
"""
# Concurrent "create ... if not exists" can still collide in the catalog: one at a time.
_SCHEMA_LOCK = 0x6D65726B  # an arbitrary advisory lock id ("merk")


@dataclass(frozen=True)
class UserKey:
    key_id: str
    key: bytes


def user_ref(keys: Keys, user_id: str) -> str:
    return hmac.new(keys.key("user_index", 1), user_id.encode(), hashlib.sha256).hexdigest()


def _context(key_id: str, ref: str) -> dict[str, str]:
    return {"purpose": "user-data-key", "key_id": key_id, "user_ref": ref}


class UserKeyStore:
    """Get-or-create, look up and shred user keys. One connection, opened on first use."""

    def __init__(self, conninfo: str, keys: Keys) -> None:
        self.conninfo = conninfo
        self.keys = keys
        self._conn: Any = None

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(SCHEMA)
            self._conn = conn
        return self._conn

    def _unwrap(self, key_id: str, ref: str, kek_version: int, wrapped: bytes) -> UserKey:
        kek = self.keys.key("user_kek", kek_version)
        return UserKey(key_id, aead_unwrap(kek, bytes(wrapped), _context(key_id, ref),
                                           where=f"user_kek v{kek_version}"))

    def _current(self, refs: list[str]) -> dict[str, UserKey]:
        rows = self._connection().execute(
            "select distinct on (user_ref) user_ref, key_id, kek_version, wrapped "
            "from privacy.user_keys where user_ref = any(%s) "
            "order by user_ref, version desc", (refs,)).fetchall()
        return {ref: self._unwrap(key_id, ref, kek, wrapped)
                for ref, key_id, kek, wrapped in rows}

    def keys_for(self, user_ids: Iterable[str]) -> dict[str, UserKey]:
        """Each user's current key, made for those who have none. Race-safe: two processes
        making one user's first key at once both insert; the unique (user_ref, version)
        keeps one, and both read that one back. Three round trips per batch at most."""
        refs = {user_id: user_ref(self.keys, user_id) for user_id in set(user_ids)}
        if not refs:
            return {}
        found = self._current(sorted(set(refs.values())))
        missing = sorted({ref for ref in refs.values() if ref not in found})
        if missing:
            kek_version = self.keys.active["user_kek"]
            kek = self.keys.key("user_kek", kek_version)
            rows = []
            for ref in missing:
                key_id = secrets.token_hex(16)
                wrapped = aead_wrap(kek, secrets.token_bytes(DATA_KEY_BYTES),
                                    _context(key_id, ref))
                rows.append((key_id, ref, kek_version, wrapped))
            with self._connection().cursor() as cur:
                cur.executemany(
                    "insert into privacy.user_keys (key_id, user_ref, version, kek_version, "
                    "wrapped) values (%s, %s, 1, %s, %s) "
                    "on conflict (user_ref, version) do nothing", rows)
            found.update(self._current(missing))
        return {user_id: found[ref] for user_id, ref in refs.items()}

    def by_id(self, key_ids: Iterable[str]) -> dict[str, UserKey]:
        """The keys of these ids that still exist (a missing one was shredded)."""
        rows = self._connection().execute(
            "select key_id, user_ref, kek_version, wrapped from privacy.user_keys "
            "where key_id = any(%s)", (sorted(set(key_ids)),)).fetchall()
        return {key_id: self._unwrap(key_id, ref, kek, wrapped)
                for key_id, ref, kek, wrapped in rows}

    def get(self, key_id: str) -> UserKey:
        found = self.by_id([key_id]).get(key_id)
        if found is None:
            raise KeyErased(f"this user's key was erased (key {key_id} was crypto-shredded): "
                            "the value can never be decrypted again")
        return found

    def shred(self, user_id: str) -> int:
        cursor = self._connection().execute(
            "delete from privacy.user_keys where user_ref = %s", (user_ref(self.keys, user_id),))
        return int(cursor.rowcount)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_user_keys(settings: Settings, keys: Keys | None = None) -> UserKeyStore:
    from mercury.privacy.keys import load_keys

    postgres = settings.privacy.user_keys_postgres or settings.postgres
    return UserKeyStore(postgres.conninfo(), keys or load_keys(settings))


def shred_user_keys(settings: Settings, user_id: str) -> int:
    """Delete every version of ``user_id``'s data key; how many were deleted. Afterwards
    every value sealed under them is unreadable for good (crypto-shredding). Idempotent: a
    second call returns 0."""
    store = open_user_keys(settings)
    try:
        return store.shred(user_id)
    finally:
        store.close()

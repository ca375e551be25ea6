"""The erasure register in Postgres: requests waiting, and tombstones of users erased.

One row per request ticket. While pending it holds the user id (the work cannot be done
without it); when the erasure completes the id is cleared and only the ticket, the dates and
the ``erasure_hash`` stay: the tombstone that loaders and the streaming job check so late
data cannot bring the user back. Submitting the same ticket again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mercury.errors import CommandError
from mercury.privacy.schema import CREATE_PRIVACY_SCHEMA

if TYPE_CHECKING:
    import psycopg

    from mercury.config import Settings

TABLE = "privacy.erasure_requests"
DEADLINE = timedelta(days=30)  # GDPR Art. 12(3): one month from the request

_DDL = CREATE_PRIVACY_SCHEMA + f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ticket        text PRIMARY KEY,
    user_id       text,
    erasure_hash  text NOT NULL,
    requested_at  timestamptz NOT NULL,
    due_at        timestamptz NOT NULL,
    completed_at  timestamptz,
    CHECK ((completed_at IS NULL) = (user_id IS NOT NULL))
);
-- The same hash of each of the user's tokens: audit records name users by token only.
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS token_hashes text[] NOT NULL DEFAULT '{{}}';
CREATE INDEX IF NOT EXISTS erasure_requests_hash ON {TABLE} (erasure_hash);
"""


@dataclass(frozen=True)
class Request:
    ticket: str
    user_id: str | None  # None once completed
    requested_at: datetime
    due_at: datetime


def connect(settings: Settings) -> psycopg.Connection:
    import psycopg

    conn = psycopg.connect(settings.postgres.conninfo(), autocommit=True)
    conn.execute(_DDL)
    return conn


def submit(settings: Settings, ticket: str, user_id: str, erasure_hash: str,
           requested_at: datetime, token_hashes: tuple[str, ...] = ()) -> Request:
    """Records the request (idempotent per ticket: a completed one comes back with no user
    id); a ticket reused for another user fails."""
    with connect(settings) as conn:
        conn.execute(
            f"INSERT INTO {TABLE} (ticket, user_id, erasure_hash, requested_at, due_at, "
            "token_hashes) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (ticket) DO NOTHING",
            (ticket, user_id, erasure_hash, requested_at, requested_at + DEADLINE,
             list(token_hashes)))
        row = conn.execute(f"SELECT user_id, erasure_hash, requested_at, due_at FROM {TABLE} "
                           "WHERE ticket = %s", (ticket,)).fetchone()
    assert row is not None  # inserted or already there
    if row[1] != erasure_hash:
        raise CommandError(f"ticket {ticket} was filed for another user; use a new ticket")
    return Request(ticket, row[0], row[2], row[3])


def pending(settings: Settings) -> list[Request]:
    """Requests not yet completed, the oldest first (it is the nearest to its deadline)."""
    with connect(settings) as conn:
        rows = conn.execute(f"SELECT ticket, user_id, requested_at, due_at FROM {TABLE} "
                            "WHERE completed_at IS NULL ORDER BY requested_at").fetchall()
    return [Request(*row) for row in rows]


def complete(settings: Settings, ticket: str, completed_at: datetime) -> None:
    """Clears the user id: from now on the register knows the user only by the hash."""
    with connect(settings) as conn:
        conn.execute(f"UPDATE {TABLE} SET user_id = NULL, completed_at = %s "
                     "WHERE ticket = %s AND completed_at IS NULL", (completed_at, ticket))


def erased_hashes(settings: Settings) -> frozenset[str]:
    """Every tombstone: hashes of users (by id and by token) erased or being erased (a
    pending request already stops new data, so the erasure does not chase data arriving
    while it runs)."""
    with connect(settings) as conn:
        return frozenset(r[0] for r in conn.execute(
            f"SELECT erasure_hash FROM {TABLE} UNION SELECT unnest(token_hashes) FROM {TABLE}"))

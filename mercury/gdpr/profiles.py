"""Erasure at the source of profiles: the Postgres row goes, and CDC carries the delete.

Logical replication turns the DELETE into a change record with only the key (``mercury.cdc``):
the tombstone that makes compacted topics and the lake's profile changes forget the user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mercury.gdpr.evidence import Removal
from mercury.gdpr.subject import Subject
from mercury.generator.profiles_pg import TABLE

if TYPE_CHECKING:
    from mercury.config import Settings


def erase_profiles(settings: Settings, subjects: list[Subject]) -> list[Removal]:
    import psycopg

    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        exists = conn.execute("select to_regclass(%s)", (TABLE,)).fetchone()
        if not exists or exists[0] is None:
            return []
        gone = {row[0] for row in conn.execute(
            f"delete from {TABLE} where user_id = any(%s) returning user_id",
            ([s.user_id for s in subjects],))}
    return [Removal(s.ticket, "postgres", TABLE, int(s.user_id in gone)) for s in subjects]


def pump_deletes(settings: Settings) -> int:
    """Moves the deletes into the event log now (when profiles are captured at all), so the
    files step that follows finds and erases the key they carry there too."""
    import psycopg

    from mercury.cdc.profiles import PROFILES, Pump

    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        captured = conn.execute("select 1 from pg_replication_slots where slot_name = %s",
                                (PROFILES.slot,)).fetchone()
    if not captured:
        return 0
    total = 0
    with Pump(settings) as pump:
        while (changes := pump.run_once().changes) > 0:
            total += changes
    return total

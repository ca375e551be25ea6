"""The ledger of gated hours in the operational store (Postgres, ``ops_state``).

One row per (stream, arrival hour): ``promoted`` (the gate passed), ``quarantined`` (a rule
broke: the hour is held from promotion) or ``released`` (a person overrode the quarantine;
the release, who made it and why, is appended to ``quality_hour_releases`` and never
changed). The row keeps the hour's profile, so promoted and released hours are the baseline
of the hours after them; quarantined ones are not, or an outage would teach the gate that
an empty hour is normal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mercury.ops import state
from mercury.quality.hour_profile import HourProfile

if TYPE_CHECKING:
    from psycopg import Connection

    from mercury.config import Settings
    from mercury.quality.anomaly import Verdict

PROMOTED, QUARANTINED, RELEASED = "promoted", "quarantined", "released"
_DDL = """
CREATE TABLE IF NOT EXISTS {hours} (
    stream      text NOT NULL,
    hour_ms     bigint NOT NULL,
    status      text NOT NULL CHECK (status IN ('promoted', 'quarantined', 'released')),
    breaches    jsonb NOT NULL,
    baseline    text NOT NULL,
    profile     jsonb NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, hour_ms)
);
CREATE TABLE IF NOT EXISTS {releases} (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text NOT NULL,
    hour_ms     bigint NOT NULL,
    released_by text NOT NULL,
    reason      text NOT NULL,
    breaches    jsonb NOT NULL,
    released_at timestamptz NOT NULL DEFAULT now()
);
"""


class NotQuarantined(ValueError):
    """A release names an hour that is not quarantined."""


@dataclass(frozen=True)
class HourRecord:
    stream: str
    hour_ms: int
    status: str
    breaches: list[dict]
    baseline: str


def connect(settings: Settings) -> Connection:
    from psycopg import sql

    conn = state.connect(settings)
    conn.execute(sql.SQL(_DDL).format(hours=state.table(settings, "quality_hours"),
                                      releases=state.table(settings, "quality_hour_releases")))
    return conn


def record(conn: Connection, settings: Settings, verdict: Verdict,
           profile: HourProfile) -> str:
    """Store the verdict; an hour already released stays released (the override holds when
    the gate runs again). Returns the hour's status."""
    from psycopg import sql

    status = PROMOTED if verdict.passed else QUARANTINED
    [[kept]] = conn.execute(sql.SQL(
        "INSERT INTO {t} (stream, hour_ms, status, breaches, baseline, profile) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (stream, hour_ms) DO UPDATE SET "
        "status = CASE WHEN {t}.status = 'released' THEN {t}.status ELSE EXCLUDED.status END, "
        "breaches = EXCLUDED.breaches, baseline = EXCLUDED.baseline, "
        "profile = EXCLUDED.profile, checked_at = now() RETURNING status").format(
            t=state.table(settings, "quality_hours")),
        (verdict.stream, verdict.hour_ms, status, json.dumps(verdict.breaches_json()),
         verdict.baseline, json.dumps(profile.to_json()))).fetchall()
    return kept


def release(conn: Connection, settings: Settings, stream: str, hour_ms: int, reason: str,
            released_by: str) -> HourRecord:
    """Override a quarantine: the hour becomes promotable, and the release is recorded."""
    from psycopg import sql

    if not reason.strip():
        raise ValueError("a release needs a reason (it is kept in quality_hour_releases)")
    with conn.transaction():
        found = conn.execute(sql.SQL(
            "UPDATE {t} SET status = 'released' WHERE stream = %s AND hour_ms = %s "
            "AND status = 'quarantined' RETURNING breaches, baseline").format(
                t=state.table(settings, "quality_hours")), (stream, hour_ms)).fetchone()
        if found is None:
            current = get(conn, settings, stream, hour_ms)
            raise NotQuarantined(f"{stream} hour {hour_ms} is "
                                 f"{current.status if current else 'not gated yet'}: "
                                 "only a quarantined hour can be released")
        conn.execute(sql.SQL(
            "INSERT INTO {t} (stream, hour_ms, released_by, reason, breaches) "
            "VALUES (%s, %s, %s, %s, %s)").format(
                t=state.table(settings, "quality_hour_releases")),
            (stream, hour_ms, released_by, reason, json.dumps(found[0])))
    return HourRecord(stream, hour_ms, RELEASED, found[0], found[1])


def get(conn: Connection, settings: Settings, stream: str, hour_ms: int) -> HourRecord | None:
    from psycopg import sql

    row = conn.execute(sql.SQL(
        "SELECT status, breaches, baseline FROM {t} WHERE stream = %s AND hour_ms = %s").format(
            t=state.table(settings, "quality_hours")), (stream, hour_ms)).fetchone()
    return None if row is None else HourRecord(stream, hour_ms, row[0], row[1], row[2])


def quarantined(conn: Connection, settings: Settings,
                stream: str | None = None) -> list[HourRecord]:
    from psycopg import sql

    rows = conn.execute(sql.SQL(
        "SELECT stream, hour_ms, breaches, baseline FROM {t} WHERE status = 'quarantined' "
        "AND (%s::text IS NULL OR stream = %s) ORDER BY stream, hour_ms").format(
            t=state.table(settings, "quality_hours")), (stream, stream)).fetchall()
    return [HourRecord(s, h, QUARANTINED, b, base) for s, h, b, base in rows]


def releases(conn: Connection, settings: Settings, stream: str,
             hour_ms: int) -> list[tuple[str, str]]:
    """(released_by, reason) of every release of the hour, oldest first."""
    from psycopg import sql

    return [(by, why) for by, why in conn.execute(sql.SQL(
        "SELECT released_by, reason FROM {t} WHERE stream = %s AND hour_ms = %s "
        "ORDER BY seq").format(t=state.table(settings, "quality_hour_releases")),
        (stream, hour_ms)).fetchall()]


def baseline_profiles(conn: Connection, settings: Settings, stream: str,
                      hours: list[int]) -> dict[int, HourProfile]:
    """Profiles of the given hours that were promoted or released."""
    from psycopg import sql

    rows = conn.execute(sql.SQL(
        "SELECT hour_ms, profile FROM {t} WHERE stream = %s AND hour_ms = ANY(%s) "
        "AND status IN ('promoted', 'released')").format(
            t=state.table(settings, "quality_hours")), (stream, hours)).fetchall()
    return {int(h): HourProfile.from_json(p) for h, p in rows}

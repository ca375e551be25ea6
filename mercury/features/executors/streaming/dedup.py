"""Deduplication by event id within a horizon of arrival time, per entity and stream.

Producer retries and CDC replays deliver the same event again, minutes to hours later. Each
entity keeps the ids it has seen with the time it saw them and forgets those seen more than
``DEDUP_HORIZON_MS`` before the newest. The clock is the caller's: the streaming job passes
its processing time, so a replay of days of history in minutes dedups all of it; the
pure-Python runs pass each event's arrival time (``ingest_ts``), which is the same thing for a
log read in arrival order. (The data's arrival time is not a safe clock for the job: the file
source may read a later file first, and a jump of the clock would forget ids too early.)

A duplicate beyond the horizon is counted again online (the lake's upsert by event id still
absorbs it). State size at production rates is worked out in docs/STREAMING.md.
"""

from __future__ import annotations

from typing import TypedDict

from mercury.durations import HOUR_MS

DEDUP_HORIZON_MS = 24 * HOUR_MS


class Seen(TypedDict):
    """One entity's dedup state for one stream (a plain dict: it pickles as is)."""
    clock: int              # the newest ``now_ms`` seen
    ids: dict[str, int]     # event id -> when it was seen


def new_seen() -> Seen:
    return {"clock": 0, "ids": {}}


def seen_before(seen: Seen, event_id: str, now_ms: int) -> bool:
    """True if ``event_id`` was seen within the horizon; otherwise remembers it."""
    ids = seen["ids"]
    if event_id in ids:
        return True
    ids[event_id] = now_ms
    if now_ms > seen["clock"]:
        seen["clock"] = now_ms
        horizon = now_ms - DEDUP_HORIZON_MS
        if len(ids) > 64 or min(ids.values()) < horizon:  # prune now and then, not every event
            for old in [i for i, at in ids.items() if at < horizon]:
                del ids[old]
    return False

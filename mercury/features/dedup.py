"""Deduplication by event id within a horizon of arrival time, per entity and stream.

Producer retries and CDC replays deliver the same event again, minutes to hours later. Each
entity keeps the ids it has seen with their arrival time (``ingest_ts``) and forgets those
that arrived more than ``DEDUP_HORIZON_MS`` before the newest arrival it has seen. The clock is
the data's own arrival time, not the machine's, so replaying a day of history in a minute
dedups exactly as live traffic did.

A duplicate beyond the horizon is counted again online (the lake's upsert by event id still
absorbs it). State size at production rates is worked out in docs/STREAMING.md.
"""

from __future__ import annotations

from mercury.durations import HOUR_MS

DEDUP_HORIZON_MS = 24 * HOUR_MS


def new_seen() -> dict:
    return {"clock": 0, "ids": {}}


def seen_before(seen: dict, event_id: str, arrival_ts: int) -> bool:
    """True if ``event_id`` was seen within the horizon; otherwise remembers it."""
    ids = seen["ids"]
    if event_id in ids:
        return True
    ids[event_id] = arrival_ts
    if arrival_ts > seen["clock"]:
        seen["clock"] = arrival_ts
        horizon = arrival_ts - DEDUP_HORIZON_MS
        if len(ids) > 64 or min(ids.values()) < horizon:  # prune now and then, not every event
            for old in [i for i, at in ids.items() if at < horizon]:
                del ids[old]
    return False

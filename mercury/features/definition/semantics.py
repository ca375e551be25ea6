"""Constants of feature semantics that every executor must share.

``MAX_LATENESS_MS`` bounds how late an event may be and still count. The streaming job drops
an event whose event time is older than ``watermark - MAX_LATENESS_MS`` to a late-events
output (nothing is silently dropped), and it never counts. The reference executor has no
watermark: it uses the event's own arrival time (``arrival_ts``) as the watermark's stand-in,
so it calls an event too late iff ``event_ts < arrival_ts - MAX_LATENESS_MS``. The two agree
away from that boundary only, so tests keep their events well clear of it. Dedup state must
live longer than this bound (see ARCHITECTURE.md, "Effectively-once").
"""

from __future__ import annotations

from mercury.durations import DAY_MS

MAX_LATENESS_MS = 30 * DAY_MS

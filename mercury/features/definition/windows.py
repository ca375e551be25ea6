"""Sliding windows over tiles: which tiles a window covers as of a time.

A window of length W is cut into hops of size h (W a multiple of h). Tiles are aligned to
epoch multiples of h, so every executor and the reader agree on tile boundaries. As of time t
a window covers the tiles k0..k1 with k1 = floor(t / h) and k0 = k1 - W/h + 1, and only
events with event_ts <= t inside them: ``tile_start(t) - W + h <= event_ts <= t``.

Hops: 5 minutes for windows up to an hour, 1 hour up to 7 days, 1 day beyond. Coarser hops
keep few tiles per entity (12, 24, 168 and 30 for 1h, 24h, 7d, 30d); finer ones would shave
the part of the oldest hop a window does not yet count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mercury.durations import DAY_MS, HOUR_MS, MINUTE_MS, format_duration, parse_duration
from mercury.features.definition.errors import DefinitionError


@dataclass(frozen=True)
class Window:
    length_ms: int
    hop_ms: int

    @property
    def label(self) -> str:
        return format_duration(self.length_ms)

    @property
    def tiles(self) -> int:
        return self.length_ms // self.hop_ms

    def tile_range(self, as_of_ms: int) -> tuple[int, int]:
        """Indexes (first, last) of the hop-sized tiles the window covers as of ``as_of_ms``."""
        last = as_of_ms // self.hop_ms
        return last - self.tiles + 1, last

    def covers(self, event_ts: int, as_of_ms: int) -> bool:
        """The definition itself, event by event (what the reference executor uses)."""
        first, _ = self.tile_range(as_of_ms)
        return first * self.hop_ms <= event_ts <= as_of_ms


def hop_for(length_ms: int) -> int:
    if length_ms <= HOUR_MS:
        return 5 * MINUTE_MS
    if length_ms <= 7 * DAY_MS:
        return HOUR_MS
    return DAY_MS


@cache
def window(text: str) -> Window:
    try:
        length = parse_duration(text)
    except ValueError as exc:
        raise DefinitionError(f"window {text!r}: {exc}") from None
    if length <= 0:
        raise DefinitionError(f"window {text!r} is empty")
    hop = hop_for(length)
    if length % hop:
        raise DefinitionError(
            f"window {text!r} is not a whole number of its {format_duration(hop)} hops")
    return Window(length, hop)


HOPS = (5 * MINUTE_MS, HOUR_MS, DAY_MS)

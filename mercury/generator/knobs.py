"""The generator's settings, validated when built."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mercury import durations

DAY_MS = durations.DAY_MS
HOUR_MS = durations.HOUR_MS
MINUTE_MS = durations.MINUTE_MS


class KnobError(ValueError):
    pass


@dataclass(frozen=True)
class Knobs:
    events: int = 100_000
    users: int = 5_000
    merchants: int = 800
    documents: int = 60
    seed: int = 7
    start_ms: int = 1_793_491_200_000  # 2026-11-01T00:00:00Z
    span_ms: int = 7 * DAY_MS
    duplicate_rate: float = 0.05
    out_of_order_rate: float = 0.10
    max_skew_ms: int = 10 * MINUTE_MS
    late_rate: float = 0.02
    lateness_min_ms: int = HOUR_MS
    lateness_max_ms: int = 3 * DAY_MS
    evolved_rate: float = 0.03
    malformed_rate: float = 0.01
    profile_update_rate: float = 0.002

    def __post_init__(self):
        for name in ("events", "users", "merchants", "span_ms"):
            if getattr(self, name) < 1:
                raise KnobError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.documents < 0:
            raise KnobError("documents must be >= 0")
        for name in ("duplicate_rate", "out_of_order_rate", "late_rate", "evolved_rate",
                     "malformed_rate", "profile_update_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise KnobError(f"{name} must be within [0, 1], got {value}")
        if self.late_rate + self.out_of_order_rate > 1.0:
            raise KnobError("late_rate + out_of_order_rate must not exceed 1")
        if self.malformed_rate + self.evolved_rate > 1.0:
            raise KnobError("malformed_rate + evolved_rate must not exceed 1")
        if not 0 <= self.lateness_min_ms <= self.lateness_max_ms:
            raise KnobError("lateness must be a range min..max with 0 <= min <= max")
        if self.max_skew_ms < 0:
            raise KnobError("max_skew must be >= 0")

    def as_dict(self) -> dict:
        return asdict(self)


def parse_duration(text: str) -> int:
    """``90s``, ``10m``, ``3h``, ``7d``, ``250ms`` -> milliseconds."""
    try:
        return durations.parse_duration(text)
    except durations.DurationError as exc:
        raise KnobError(str(exc)) from None


def parse_range(text: str) -> tuple[int, int]:
    """``1h..3d`` -> (min_ms, max_ms)."""
    low, sep, high = text.partition("..")
    if not sep:
        raise KnobError(f"{text!r} is not a range: write it as MIN..MAX, e.g. 1h..3d")
    return parse_duration(low), parse_duration(high)

"""Durations written the way people say them: ``250ms``, ``90s``, ``10m``, ``3h``, ``7d``."""

from __future__ import annotations

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

_UNITS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> int:
    """``90s``, ``10m``, ``3h``, ``7d``, ``250ms`` -> milliseconds."""
    text = text.strip()
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(text[: -len(unit)]) * _UNITS[unit])
    raise DurationError(
        f"{text!r} is not a duration: use a number with ms, s, m, h or d (e.g. 10m)")


def format_duration(ms: int) -> str:
    """The shortest exact spelling: 86_400_000 -> ``1d``, 5_400_000 -> ``90m``."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"

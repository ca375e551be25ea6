"""What one hour of a stream looked like, kept small enough to store per hour.

The anomaly gate (``mercury.quality.anomaly``) compares an hour's profile with the profiles
of earlier hours, so the baseline never re-reads raw data. A profile holds counts only:
records, nulls per contract column, records carrying each field the contract lacks, value
counts of the categorical columns, a fine fixed-edge histogram of the numeric ones (merged
into the reference's quantile bins when PSI is computed), duplicates of an event id within
the hour, and records that arrived later than ``late_after_ms`` after their event time.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from mercury.contracts import registry, schemas

HOUR_MS = 3_600_000
# Ten bins a decade from 0.01 to 10^7 (amounts in major units of any currency, MXN and SEK
# included): fine enough that the reference's deciles can be rebuilt from them.
NUMERIC_EDGES: tuple[float, ...] = tuple(10 ** (k / 10) for k in range(-20, 71))


class ProfileError(ValueError):
    """A record cannot be profiled; the message names the record and the field."""


@dataclass
class HourProfile:
    stream: str
    hour_ms: int  # start of the arrival hour, epoch ms
    records: int = 0
    nulls: Counter = field(default_factory=Counter)  # contract column -> null/missing records
    unknown: Counter = field(default_factory=Counter)  # field outside the contract -> records
    categories: dict[str, Counter] = field(default_factory=dict)  # column -> value -> records
    histograms: dict[str, list[int]] = field(default_factory=dict)  # column -> bin counts
    duplicates: int = 0  # records repeating an event id seen earlier in the hour
    late: int = 0  # records that arrived more than late_after_ms after their event time

    def to_json(self) -> dict:
        return {"stream": self.stream, "hour_ms": self.hour_ms, "records": self.records,
                "nulls": dict(self.nulls), "unknown": dict(self.unknown),
                "categories": {c: dict(v) for c, v in self.categories.items()},
                "histograms": self.histograms, "duplicates": self.duplicates,
                "late": self.late}

    @classmethod
    def from_json(cls, data: dict) -> HourProfile:
        return cls(stream=data["stream"], hour_ms=int(data["hour_ms"]),
                   records=int(data["records"]), nulls=Counter(data["nulls"]),
                   unknown=Counter(data["unknown"]),
                   categories={c: Counter(v) for c, v in data["categories"].items()},
                   histograms={c: list(v) for c, v in data["histograms"].items()},
                   duplicates=int(data["duplicates"]), late=int(data["late"]))


@cache
def contract_columns(stream: str) -> tuple[str, ...]:
    """Top-level fields of the stream's latest contract."""
    subject = registry.stream(stream).schema_subject
    return tuple(f["name"] for f in schemas.load(subject).schema["fields"])


def hour_start(ms: int) -> int:
    return ms - ms % HOUR_MS


def profile_hour(stream: str, hour_ms: int, records: Iterable[dict],
                 categorical: tuple[str, ...] = (), numeric: tuple[str, ...] = (),
                 late_after_ms: int = HOUR_MS) -> HourProfile:
    """The profile of validated records (dicts as on the stream, times in epoch ms) that
    arrived in the hour starting at ``hour_ms``; a record arriving outside it is an error."""
    if hour_ms % HOUR_MS:
        raise ProfileError(f"hour_ms {hour_ms} is not the start of an hour")
    spec = registry.stream(stream)
    columns = contract_columns(stream)
    known = set(columns)
    id_field, time_field = spec.event_id_field, spec.event_time_field
    profile = HourProfile(stream, hour_ms,
                          categories={c: Counter() for c in categorical},
                          histograms={c: [0] * (len(NUMERIC_EDGES) + 1) for c in numeric})
    seen: set[object] = set()  # event ids, as the records carry them
    for n, record in enumerate(records):
        arrived = record.get("ingest_ts")
        if not isinstance(arrived, int) or hour_start(arrived) != hour_ms:
            raise ProfileError(f"{stream} record {n} ({record.get(id_field or '', '?')}): "
                               f"ingest_ts {arrived!r} is not in the hour starting {hour_ms}")
        profile.records += 1
        for column in columns:
            if record.get(column) is None:
                profile.nulls[column] += 1
        profile.unknown.update(key for key in record if key not in known)
        for column in categorical:
            profile.categories[column][str(record.get(column))] += 1
        for column in numeric:
            profile.histograms[column][_bin(record.get(column), stream, n, column)] += 1
        if id_field:
            event_id = record.get(id_field)
            if event_id in seen:
                profile.duplicates += 1
            seen.add(event_id)
        event_ts = record.get(time_field) if time_field else None
        if isinstance(event_ts, int) and arrived - event_ts > late_after_ms:
            profile.late += 1
    return profile


def _bin(value, stream: str, n: int, column: str) -> int:
    """Bin of a numeric value: 0 holds values below 0.01 (and zero), the last the largest."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ProfileError(f"{stream} record {n}: {column} is {value!r}, not a number")
    return bisect_right(NUMERIC_EDGES, value)


def merged(profiles: Iterable[HourProfile], stream: str) -> HourProfile:
    """Several hours' profiles summed into one (the reference of the PSI rule)."""
    total = HourProfile(stream, 0)
    for p in profiles:
        total.records += p.records
        total.nulls.update(p.nulls)
        total.unknown.update(p.unknown)
        for column, counts in p.categories.items():
            total.categories.setdefault(column, Counter()).update(counts)
        for column, bins in p.histograms.items():
            into = total.histograms.setdefault(column, [0] * len(bins))
            for i, count in enumerate(bins):
                into[i] += count
        total.duplicates += p.duplicates
        total.late += p.late
    return total

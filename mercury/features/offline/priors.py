"""Fallback priors: each feature set's numeric features averaged per segment of users, daily.

When the context API cannot read a user's set (the store times out, its breaker is open, the
user's hash is missing or does not decode) it serves these instead, flagged ``source: prior``
(docs/SERVING.md, "Fallback priors"). They are computed in the batch path from the feature
history (one row per user and day, ``history.py``) as of a day's end, never from the clock.

- **Segments**: home country x risk tier, from the profile set's history of the same day.
  Both are in every profile (the generator's world and Postgres' ``NOT NULL`` columns), both
  move spend (amounts scale by country and currency, declines and risk signals by tier), and
  the serving process can know them without the store that failed (it caches each user's
  profile). A user with no profile that day counts for the population only.
- **Minimum count**: a segment of fewer users than ``offline.priors_min_count`` is not
  published; its users get the population's prior. An average of three users is almost one
  user's values, and it would be a poor prior and a leak. A population that small publishes
  nothing at all. So a prior describes no one, and an erasure has nothing to remove from it.
- **What is averaged**: every ``Aggregate`` leaf (per window, per currency and group key).
  Sums and counts are additive, so a user without a key (no spend in SEK) counts as 0 for it;
  an average, minimum or maximum of nothing has no value, so such a user is left out of that
  leaf's mean. Last-N lists and latest records have no average: they are null in a prior.

A prior document per (set, version) is published under ``layout.prior_key`` with an explicit
TTL; writing the same day again rewrites the same bytes, and an older day never replaces a
newer one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson

from mercury.features.definition.dsl import Aggregate, FeatureSet
from mercury.online import layout

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.online.store import OnlineStore

PROFILE_SET, PROFILE_FEATURE = "profile", "profile"
SEGMENT_FIELDS = ("home_country", "risk_tier")
POPULATION = "population"
ADDITIVE = ("sum", "count", "distinct_count")  # a missing key is a zero, not an unknown


def segment_of(profile_values: Mapping[str, Any] | None) -> str | None:
    """A user's segment (``"FR/LOW"``) from the profile set's values, None when unknown."""
    profile = (profile_values or {}).get(PROFILE_FEATURE)
    if not isinstance(profile, dict):
        return None
    parts = [profile.get(name) for name in SEGMENT_FIELDS]
    texts = [part for part in parts if isinstance(part, str) and part]
    return "/".join(texts) if len(texts) == len(SEGMENT_FIELDS) else None


@dataclass(frozen=True)
class Priors:
    """One set version's priors as of a day: the population's and each large segment's."""
    set_name: str
    version: int
    day: date
    min_count: int
    population: dict[str, Any]  # {"count": users, "values": {feature: value or None}}
    segments: dict[str, dict[str, Any]]  # segment -> {"count", "values"}

    @property
    def as_of_ms(self) -> int:
        from mercury.features.offline.history import day_end_ms  # pyarrow: not for serving

        return day_end_ms(self.day)

    def to_json(self) -> bytes:
        return orjson.dumps({
            "set": self.set_name, "version": self.version, "day": self.day.isoformat(),
            "as_of_ms": self.as_of_ms, "min_count": self.min_count,
            "segment_fields": list(SEGMENT_FIELDS), "population": self.population,
            "segments": self.segments}, option=orjson.OPT_SORT_KEYS)


def has_prior(feature_set: FeatureSet) -> bool:
    """Whether the set has anything to average (a set of lists and records has not)."""
    return any(isinstance(f, Aggregate) for f in feature_set.features)


def compute(feature_set: FeatureSet, day: date, rows: Iterable[tuple[str, Mapping[str, Any]]],
            segments: Mapping[str, str], min_count: int) -> Priors:
    """The priors of ``feature_set`` from its values per user as of ``day``'s end (``rows``:
    (user, values), one per user) and each user's segment (``segments``; absent: unknown)."""
    groups: dict[str, _Means] = {POPULATION: _Means(feature_set)}
    for entity_id, values in rows:
        groups[POPULATION].add(values)
        segment = segments.get(entity_id)
        if segment is not None:
            groups.setdefault(segment, _Means(feature_set)).add(values)
    population = groups.pop(POPULATION).result()
    kept = {name: means.result() for name, means in sorted(groups.items())
            if means.users >= min_count}
    return Priors(feature_set.name, feature_set.version, day, min_count, population, kept)


class _Means:
    """Running sums per leaf (feature, window, key path) over the users of one group."""

    def __init__(self, feature_set: FeatureSet) -> None:
        self.aggregates = [f for f in feature_set.features if isinstance(f, Aggregate)]
        self.others = [f.name for f in feature_set.features if not isinstance(f, Aggregate)]
        # Keyed by group or currency, as ``tiles.finalize`` shapes them.
        self.keyed = {f.name: f.group_by is not None or (
            f.column is not None and feature_set.source.currency_of(f.column) is not None)
            for f in self.aggregates}
        self.users = 0
        # (feature, window label, key path) -> the values seen (fsum later: order-free)
        self.seen: dict[tuple[str, str, tuple[str, ...]], list[float]] = {}

    def add(self, values: Mapping[str, Any]) -> None:
        self.users += 1
        for feature in self.aggregates:
            for label, value in (values.get(feature.name) or {}).items():
                for path, leaf in _leaves(value, ()):
                    if isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
                        self.seen.setdefault((feature.name, label, path), []).append(leaf)
                    elif feature.op in ADDITIVE:  # a null sum is no spend
                        self.seen.setdefault((feature.name, label, path), []).append(0.0)

    def result(self) -> dict[str, Any]:
        values: dict[str, Any] = {name: None for name in self.others}
        ops = {f.name: f.op for f in self.aggregates}
        for feature in self.aggregates:
            values[feature.name] = {}
        for (name, label, path), seen in sorted(self.seen.items()):
            # Additive: every user of the group counts (absent = 0); else only those with one.
            mean = math.fsum(seen) / (self.users if ops[name] in ADDITIVE else len(seen))
            window = values[name]
            if not path:
                window[label] = mean
                continue
            node = window.setdefault(label, {})
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = mean
        for feature in self.aggregates:  # every window is there, even one nobody had
            for label in _window_labels(feature):
                values[feature.name].setdefault(label, {} if self.keyed[feature.name] else None)
        return {"count": self.users, "values": values}


def _leaves(value: Any, path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaves(inner, (*path, key))
    else:
        yield path, value


def _window_labels(feature: Aggregate) -> list[str]:
    from mercury.features.definition.windows import window

    return [window(text).label for text in feature.windows]


# ---- the batch step: history in, priors out, published ----------------------------------------

def from_history(settings: Settings, feature_sets: Iterable[FeatureSet], day: date,
                 log: Any = print) -> list[Priors]:
    """Every set's priors as of ``day`` from the feature history tables (Iceberg). A set
    without a history table or without rows that day is skipped with a line in the log;
    without a profile history every user counts for the population only.

    In plain Python over the day's rows: one row per user and set, a few hundred MB a day at
    38M users, within one worker; past that, the same ``compute`` runs per segment in Spark
    (``groupBy(segment).applyInArrow``)."""
    from mercury.features.offline.history import HistoryError, decode_row, read

    sets = list(feature_sets)
    segments: dict[str, str] = {}
    profile = _newest(s for s in sets if s.name == PROFILE_SET)
    if profile is not None:
        try:
            for row in read(settings, profile, day, day).to_pylist():
                if (segment := segment_of(decode_row(profile, row))) is not None:
                    segments[row["entity_id"]] = segment
        except HistoryError as exc:
            log(f"no segments on {day} (every prior is the population's): {exc}")
    out = []
    for fs in sets:
        if not has_prior(fs):
            continue
        try:
            table = read(settings, fs, day, day)
        except HistoryError as exc:
            log(f"{fs.ref}: no prior: {exc}")
            continue
        if table.num_rows == 0:  # history not computed for that day: the last prior stays
            log(f"{fs.ref}: no history rows on {day}: no prior (the published one stays)")
            continue
        rows = ((row["entity_id"], decode_row(fs, row)) for row in table.to_pylist())
        priors = compute(fs, day, rows, segments, settings.offline.priors_min_count)
        if priors.population["count"] < priors.min_count:  # the same rule as any segment
            log(f"{fs.ref}: no prior: {priors.population['count']} users on {day}, fewer "
                f"than {priors.min_count}")
            continue
        log(f"{fs.ref}: {day}: {priors.population['count']} users, "
            f"{len(priors.segments)} segments of at least {priors.min_count}")
        out.append(priors)
    return out


def _newest(sets: Iterable[FeatureSet]) -> FeatureSet | None:
    return max(sets, key=lambda fs: fs.version, default=None)


def publish(store: OnlineStore, priors: Iterable[Priors], ttl_s: int) -> dict[str, str]:
    """Writes each document under its key with the TTL; a stored document of a later day is
    kept (a re-run of an old day does not take the newer prior away). Returns key -> what
    happened (``written`` or ``kept <day>``)."""
    todo = list(priors)
    keys = [layout.prior_key(p.set_name, p.version) for p in todo]
    stored = store.get_values(keys)
    writes: dict[str, bytes] = {}
    outcome: dict[str, str] = {}
    for key, prior, current in zip(keys, todo, stored, strict=True):
        current_day = orjson.loads(current)["day"] if current else None
        if current_day is not None and current_day > prior.day.isoformat():
            outcome[key] = f"kept {current_day}"
            continue
        writes[key] = prior.to_json()
        outcome[key] = "written"
    if writes:
        store.put_values(writes, ttl_s * 1000)
    return outcome

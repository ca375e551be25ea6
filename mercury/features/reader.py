"""The one online read path: an entity's feature sets from the online store, as of a time.

``decode`` turns one feature-set hash into values, merging the tiles each window covers as of
``as_of_ms``; the result has exactly the shape the reference executor returns, which is how
tests hold the store to the oracle. ``ContextReader`` reads the served sets of one entity in
one round trip (sync for jobs and tests, async for the context API: the same plan and decode),
with the served-version pointers cached for ``pointer_ttl_ms`` and refreshed inside that same
round trip when stale. Exact for request times at or after the entity's newest stored event
(the serving case); historical as-of values are the batch executor's job.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson

from mercury.durations import parse_duration
from mercury.features.definition.dsl import Aggregate, FeatureSet, LastN, Latest
from mercury.features.definition.windows import window
from mercury.features.executors import tiles
from mercury.online import layout
from mercury.online.store import Hashes, OnlineStore, Versions

# A feature's value is plain JSON (its shape is the reference executor's, see the module doc).
Values = dict[str, Any]  # feature name -> value


def decode(feature_set: FeatureSet, fields: Mapping[str, bytes], as_of_ms: int) -> Values:
    tiles_by_hop: dict[int, list[tuple[int, bytes]]] = {}
    for name, raw in fields.items():
        if name.startswith("t:"):
            hop, index = _tile_field(name)
            tiles_by_hop.setdefault(hop, []).append((index, raw))
    aggregates = _aggregates(feature_set, tiles_by_hop, as_of_ms)
    values: Values = {}
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            values[feature.name] = {label: aggregates[(feature.name, label)]
                                    for label in _labels(feature)}
        elif isinstance(feature, LastN):
            stored = fields.get(layout.list_field(feature.name))
            items = orjson.loads(stored) if stored else []
            values[feature.name] = [item for item in items if item["ts"] <= as_of_ms]
        elif isinstance(feature, Latest):
            stored = fields.get(layout.latest_field(feature.name))
            values[feature.name] = _latest(feature, orjson.loads(stored) if stored else {},
                                           as_of_ms)
    return values


@cache
def _tile_field(name: str) -> tuple[int, int]:
    return layout.parse_tile_field(name)


@cache
def _labels(feature: Aggregate) -> tuple[str, ...]:
    return tuple(window(text).label for text in feature.windows)


def _aggregates(feature_set: FeatureSet, tiles_by_hop: Mapping[int, list[tuple[int, bytes]]],
                as_of_ms: int) -> dict[tuple[str, str], Any]:
    """``{(feature, window label): value}`` for every aggregate, each tile parsed and merged
    once: per hop, windows are taken shortest first and tiles newest first, so each window's
    value is the running merge at the moment its oldest tile has been added."""
    windows_by_hop: dict[int, list[tuple[int, Aggregate, str]]] = {}
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            for text in feature.windows:
                w = window(text)
                windows_by_hop.setdefault(w.hop_ms, []).append(
                    (w.tile_range(as_of_ms)[0], feature, w.label))
    out: dict[tuple[str, str], Any] = {}
    for hop, wanted in windows_by_hop.items():
        last = as_of_ms // hop
        newest_first = sorted((t for t in tiles_by_hop.get(hop, ()) if t[0] <= last),
                              reverse=True)
        ops = {feature.name: feature.op for _, feature, _ in wanted}
        running: dict[str, dict[str, Any]] = {}
        taken = 0
        for first, feature, label in sorted(wanted, key=lambda item: -item[0]):
            while taken < len(newest_first) and newest_first[taken][0] >= first:
                for name, buckets in orjson.loads(newest_first[taken][1]).items():
                    op = ops.get(name)
                    if op is None:
                        continue
                    merged = running.setdefault(name, {})
                    for bucket, partial in buckets.items():
                        merged[bucket] = tiles.merge(op, merged.get(bucket), partial)
                taken += 1
            out[(feature.name, label)] = tiles.finalize(feature, feature_set.source,
                                                        running.get(feature.name, {}))
    return out


def _latest(feature: Latest, entries: Mapping[str, Any],
            as_of_ms: int) -> dict[str, Any] | None:
    max_age = parse_duration(feature.max_age) if feature.max_age else None
    shown: dict[str, Any] = {}
    for per, entry in entries.items():
        if entry is None or entry["ts"] > as_of_ms:
            continue
        if max_age is not None and as_of_ms - entry["ts"] > max_age:
            continue
        if entry["exp"] is not None and entry["exp"] <= as_of_ms:
            continue
        shown[per] = {**entry["values"], "ts": entry["ts"]}
    if feature.per is not None:
        return shown
    return shown.get("")


NO_DATA, CORRUPT = "no_data", "corrupt"


@dataclass
class Context:
    entity_id: str
    as_of_ms: int
    values: dict[str, Values]  # set name -> feature -> value
    versions: dict[str, int]   # set name -> served version
    # set name -> newest event time applied (None if nothing yet)
    newest_event_ms: dict[str, int | None]
    # set name -> why it has no values: "no_data" (the store holds nothing at all for this
    # entity: a new user, or one evicted or moved out) or "corrupt" (its hash does not decode)
    missing: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    sets: list[FeatureSet]    # the sets to read, at the versions believed served
    unserved: list[str]       # wanted set names with no served version (yet)
    pointer_sets: tuple[str, ...]  # set names whose pointers ride along (empty: cache fresh)


class ContextReader:
    """``context`` / ``acontext``: one round trip each, the same plan and the same decode."""

    def __init__(self, store: OnlineStore, feature_sets: Collection[FeatureSet],
                 pointer_ttl_ms: int = 1_000,
                 default_versions: Mapping[str, int] | None = None) -> None:
        self.store = store
        # Keyed (name, version); looked up with the cached version, None when none is served.
        self.catalog: dict[tuple[str, int | None], FeatureSet] = {
            (fs.name, fs.version): fs for fs in feature_sets}
        self.set_names = sorted({fs.name for fs in feature_sets})
        self.pointer_ttl_ms = pointer_ttl_ms
        self.default_versions = default_versions or {}
        self._versions: dict[str, int] = {}
        self._versions_read_at: int | None = None

    def served_versions(self) -> dict[str, int]:
        """The versions served as of the last pointer read (cached, no I/O)."""
        return dict(self._versions)

    def context(self, entity_tag: str, entity_id: str, as_of_ms: int | None = None,
                names: Iterable[str] | None = None, *, now_ms: int | None = None) -> Context:
        """The served sets of ``entity_tag`` (all of them, or ``names``) for one entity."""
        now_ms, as_of_ms = _times(now_ms, as_of_ms)
        if self._versions_read_at is None:  # nothing known yet: the pointers alone first
            self._take_pointers(self.store.active_versions(self.set_names), now_ms)
        plan = self._plan(entity_tag, names, now_ms)
        hashes, pointers = self.store.fetch(self._keys(plan, entity_id), plan.pointer_sets)
        if self._moved(plan, pointers, now_ms):
            plan = self._plan(entity_tag, names, now_ms)
            hashes, _ = self.store.fetch(self._keys(plan, entity_id))
        return self._decode(plan, entity_id, hashes, as_of_ms)

    async def acontext(self, entity_tag: str, entity_id: str, as_of_ms: int | None = None,
                       names: Iterable[str] | None = None, *,
                       now_ms: int | None = None) -> Context:
        """``context`` for an event loop (the context API)."""
        now_ms, as_of_ms = _times(now_ms, as_of_ms)
        if self._versions_read_at is None:
            self._take_pointers((await self.store.afetch((), self.set_names))[1], now_ms)
        plan = self._plan(entity_tag, names, now_ms)
        hashes, pointers = await self.store.afetch(self._keys(plan, entity_id),
                                                   plan.pointer_sets)
        if self._moved(plan, pointers, now_ms):
            plan = self._plan(entity_tag, names, now_ms)
            hashes, _ = await self.store.afetch(self._keys(plan, entity_id))
        return self._decode(plan, entity_id, hashes, as_of_ms)

    def _plan(self, entity_tag: str, names: Iterable[str] | None, now_ms: int) -> _Plan:
        """What to read: the wanted sets at the cached versions, and the pointers too when
        the cache is older than ``pointer_ttl_ms`` (they ride in the same round trip)."""
        stale = self._versions_read_at is None or \
            now_ms - self._versions_read_at >= self.pointer_ttl_ms
        sets: list[FeatureSet] = []
        unserved: list[str] = []
        for name in sorted(self.set_names if names is None else names):
            fs = self.catalog.get((name, self._versions.get(name)))
            if fs is None:
                unserved.append(name)
            elif fs.entity.tag == entity_tag:
                sets.append(fs)
        return _Plan(sets, unserved, tuple(self.set_names) if stale else ())

    @staticmethod
    def _keys(plan: _Plan, entity_id: str) -> list[str]:
        return [layout.entity_key(fs, entity_id) for fs in plan.sets]

    def _take_pointers(self, pointers: Versions, now_ms: int) -> None:
        self._versions = {n: v for n in self.set_names
                          if (v := pointers.get(n) if pointers.get(n) is not None
                              else self.default_versions.get(n)) is not None}
        self._versions_read_at = now_ms

    def _moved(self, plan: _Plan, pointers: Versions, now_ms: int) -> bool:
        """Take the pointers the plan carried; True when they name other versions than the
        plan read (a promotion happened: read again)."""
        if not plan.pointer_sets:
            return False
        before = self._versions
        self._take_pointers(pointers, now_ms)
        return self._versions != before

    def _decode(self, plan: _Plan, entity_id: str, hashes: Hashes, as_of_ms: int) -> Context:
        """Each set's values. An empty hash beside others is a set with no event within its
        TTL (TTLs outlive windows, so its empty values are exact); when every hash is empty
        the store knows nothing of the entity and no values are made up. A hash that does not
        decode is that set's problem alone."""
        values: dict[str, Values] = {}
        newest: dict[str, int | None] = {}
        missing: dict[str, str] = {}
        unknown = bool(plan.sets) and not any(hashes)
        for fs, fields in zip(plan.sets, hashes, strict=True):
            if unknown:
                missing[fs.name] = NO_DATA
                continue
            try:
                values[fs.name] = decode(fs, fields, as_of_ms)
                stamp = fields.get(layout.STAMP_FIELD)
                newest[fs.name] = int(stamp) if stamp else None
            except (ValueError, KeyError, TypeError, AttributeError):  # bytes not ours
                missing[fs.name] = CORRUPT
        return Context(entity_id, as_of_ms, values, {fs.name: fs.version for fs in plan.sets},
                       newest, missing)


def _times(now_ms: int | None, as_of_ms: int | None) -> tuple[int, int]:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return now_ms, now_ms if as_of_ms is None else as_of_ms

"""Reading an entity's whole context from the online store, as of a request time.

``decode`` turns one feature-set hash into values, merging the tiles each window covers as of
``as_of_ms`` (see ``mercury.features.windows``); the result has exactly the shape the reference
executor returns, which is how tests hold the store to the oracle. ``ContextReader`` fetches
every served feature set of one entity in a single pipelined round trip; the active-version
pointers are cached for ``pointer_ttl_ms`` so they cost no round trip per request.

Values are exact for request times at or after the newest event the store holds for the
entity (the serving case); historical as-of values are the batch executor's job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

import orjson

from mercury.durations import parse_duration
from mercury.features import tiles
from mercury.features.dsl import Aggregate, LastN, Latest
from mercury.features.windows import window
from mercury.online import layout


def decode(feature_set, fields: dict[str, bytes], as_of_ms: int) -> dict:
    tiles_by_hop: dict[int, list[tuple[int, bytes]]] = {}
    for name, raw in fields.items():
        if name.startswith("t:"):
            hop, index = _tile_field(name)
            tiles_by_hop.setdefault(hop, []).append((index, raw))
    aggregates = _aggregates(feature_set, tiles_by_hop, as_of_ms)
    values = {}
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            values[feature.name] = {label: aggregates[(feature.name, label)]
                                    for label in _labels(feature)}
        elif isinstance(feature, LastN):
            raw = fields.get(layout.list_field(feature.name))
            items = orjson.loads(raw) if raw else []
            values[feature.name] = [item for item in items if item["ts"] <= as_of_ms]
        elif isinstance(feature, Latest):
            raw = fields.get(layout.latest_field(feature.name))
            values[feature.name] = _latest(feature, orjson.loads(raw) if raw else {}, as_of_ms)
    return values


@cache
def _tile_field(name: str) -> tuple[int, int]:
    return layout.parse_tile_field(name)


@cache
def _labels(feature: Aggregate) -> tuple[str, ...]:
    return tuple(window(text).label for text in feature.windows)


def _aggregates(feature_set, tiles_by_hop: dict, as_of_ms: int) -> dict:
    """``{(feature, window label): value}`` for every aggregate, each tile parsed and merged
    once: per hop, windows are taken shortest first and tiles newest first, so each window's
    value is the running merge at the moment its oldest tile has been added."""
    windows_by_hop: dict[int, list] = {}
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            for text in feature.windows:
                w = window(text)
                windows_by_hop.setdefault(w.hop_ms, []).append(
                    (w.tile_range(as_of_ms)[0], feature, w.label))
    out = {}
    for hop, wanted in windows_by_hop.items():
        last = as_of_ms // hop
        newest_first = sorted((t for t in tiles_by_hop.get(hop, ()) if t[0] <= last),
                              reverse=True)
        ops = {feature.name: feature.op for _, feature, _ in wanted}
        running: dict[str, dict] = {}
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


def _latest(feature: Latest, entries: dict, as_of_ms: int):
    max_age = parse_duration(feature.max_age) if feature.max_age else None
    shown = {}
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


@dataclass
class Context:
    entity_id: str
    as_of_ms: int
    values: dict        # set name -> feature -> value
    versions: dict      # set name -> served version
    newest_event_ms: dict  # set name -> newest event time applied (None if nothing yet)


class ContextReader:
    def __init__(self, store, feature_sets, pointer_ttl_ms: int = 1_000,
                 default_versions: dict | None = None):
        self.store = store
        self.catalog = {(fs.name, fs.version): fs for fs in feature_sets}
        self.set_names = sorted({fs.name for fs in feature_sets})
        self.pointer_ttl_ms = pointer_ttl_ms
        self.default_versions = default_versions or {}
        self._versions: dict = {}
        self._versions_read_at = None

    def served_versions(self, now_ms: int) -> dict[str, int]:
        stale = self._versions_read_at is None or now_ms - self._versions_read_at \
            >= self.pointer_ttl_ms
        if stale:
            active = self.store.active_versions(self.set_names)
            self._versions = {n: v if v is not None else self.default_versions.get(n)
                              for n, v in active.items()}
            self._versions = {n: v for n, v in self._versions.items() if v is not None}
            self._versions_read_at = now_ms
        return self._versions

    def context(self, entity_tag: str, entity_id: str, as_of_ms: int | None = None) -> Context:
        now_ms = int(time.time() * 1000)
        as_of_ms = now_ms if as_of_ms is None else as_of_ms
        sets = [self.catalog[(name, version)]
                for name, version in sorted(self.served_versions(now_ms).items())
                if (name, version) in self.catalog
                and self.catalog[(name, version)].entity.tag == entity_tag]
        hashes = self.store.read([layout.entity_key(fs, entity_id) for fs in sets])
        values, newest = {}, {}
        for fs, fields in zip(sets, hashes, strict=True):
            values[fs.name] = decode(fs, fields, as_of_ms)
            stamp = fields.get(layout.STAMP_FIELD)
            newest[fs.name] = int(stamp) if stamp else None
        return Context(entity_id, as_of_ms, values, {fs.name: fs.version for fs in sets},
                       newest)

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

import orjson

from mercury.durations import parse_duration
from mercury.features import tiles
from mercury.features.dsl import Aggregate, LastN, Latest
from mercury.features.windows import window
from mercury.online import layout


def decode(feature_set, fields: dict[str, bytes], as_of_ms: int) -> dict:
    by_hop: dict[int, dict[int, bytes]] = {}
    for name, raw in fields.items():
        if name.startswith("t:"):
            hop, index = layout.parse_tile_field(name)
            by_hop.setdefault(hop, {})[index] = raw
    parsed: dict[tuple[int, int], dict] = {}
    values = {}
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            values[feature.name] = _aggregate(feature_set, feature, by_hop, parsed, as_of_ms)
        elif isinstance(feature, LastN):
            raw = fields.get(layout.list_field(feature.name))
            items = orjson.loads(raw) if raw else []
            values[feature.name] = [item for item in items if item["ts"] <= as_of_ms]
        elif isinstance(feature, Latest):
            raw = fields.get(layout.latest_field(feature.name))
            values[feature.name] = _latest(feature, orjson.loads(raw) if raw else {}, as_of_ms)
    return values


def _aggregate(feature_set, feature, by_hop, parsed, as_of_ms: int) -> dict:
    out = {}
    for text in feature.windows:
        w = window(text)
        first, last = w.tile_range(as_of_ms)
        merged: dict = {}
        for index, raw in by_hop.get(w.hop_ms, {}).items():
            if first <= index <= last:
                tile = parsed.get((w.hop_ms, index))
                if tile is None:
                    tile = parsed[(w.hop_ms, index)] = orjson.loads(raw)
                for bucket, partial in tile.get(feature.name, {}).items():
                    merged[bucket] = tiles.merge(feature.op, merged.get(bucket), partial)
        out[w.label] = tiles.finalize(feature, feature_set.source, merged)
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

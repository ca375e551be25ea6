"""The SQL job's ``writes`` rows -> whole-field writes of the online store.

A row is (set or stream, entity id, kind, name, payload) for one field whose value changed in
Flink state; this module turns a batch of them into ``KeyWrite``s in the layout the reader
decodes (``mercury.online.layout``), the same bytes' meaning as
``mercury.features.executors.streaming.incremental.render``:

    t  a tile: {"<feature><SEP><bucket>": "<partial as JSON text>"} -> {feature: {bucket: partial}}
       (a distinct count has one part per value: "<feature><SEP><bucket><PART>value": "1")
    v  latest values: {per: "<order><PICK>[ts, deleted, expires, v1, ...]"}
    l  last-N items: {item: "[first event time, <rank><PICK>[status], <rank><PICK>[v1], ...]"}
    c  a stream's clock for an entity, {"": padded clock}: ``_ts`` of each of its sets, and
       the pruning of tiles no window reads any more (a Redis-side scan, once per entity and
       day)

Rows of one field come in the order Flink changed it, so the last one in a batch wins. Every
value is state, never an increment: a batch written twice (a restore replays what followed
its checkpoint) leaves the same hash.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from mercury.durations import DAY_MS, parse_duration
from mercury.features.definition.dsl import Aggregate, FeatureSet, LastN, Latest
from mercury.features.executors import tiles
from mercury.features.executors.flinksql.contract import compile_contract
from mercury.features.executors.streaming.incremental import tile_retention
from mercury.online import layout
from mercury.online.store import KeyWrite

Row = tuple[str, str, str, str, str]  # (set ref or stream, entity id, kind, name, payload)
PICK = "\x1e"
PART = "\x1d"
PRUNED_KEYS_REMEMBERED = 200_000


def _picked(pick: str | None) -> Any:
    """The value of an ordered pick ``"<order><PICK>[value]"``; None when nothing was picked."""
    if pick is None:
        return None
    return orjson.loads(pick[pick.index(PICK) + 1:])[0]


def _untag(value: Any) -> Any:
    """A nested value the SQL carries tagged (``o{...}``, ``a[...]``, ``z``) -> its value."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] in "oa":
        return orjson.loads(value[1:])
    return None if value == "z" else value


class OnlineWrites:
    def __init__(self, feature_sets: Sequence[FeatureSet]) -> None:
        self.sets = {fs.ref: fs for fs in feature_sets}
        self.by_stream: dict[str, list[FeatureSet]] = {}
        for fs in feature_sets:
            self.by_stream.setdefault(fs.source.stream, []).append(fs)
        self.ops = {(fs.ref, f.name): f.op for fs in feature_sets for f in fs.features
                    if isinstance(f, Aggregate)}
        self.ttl_ms = {fs.ref: parse_duration(fs.ttl) for fs in feature_sets}
        self.nested = {fs.ref: self._nested_fields(fs) for fs in feature_sets}
        # key -> the day its tiles were last pruned (kept for the recently active keys only:
        # forgetting one costs one more prune, never a wrong value)
        self.pruned: OrderedDict[str, int] = OrderedDict()

    @staticmethod
    def _nested_fields(fs: FeatureSet) -> set[str]:
        from mercury.contracts import registry

        contract = compile_contract(registry.stream(fs.source.stream).schema_subject)
        prefix = "after." if fs.source.envelope == "debezium" else ""
        return {c.name[len(prefix):] for c in contract.columns
                if c.kind == "json" and c.name.startswith(prefix)}

    def key_writes(self, rows: Iterable[Row]) -> list[KeyWrite]:
        fields: dict[str, dict[str, bytes]] = {}
        prunes: dict[str, tuple[tuple[int, int], ...]] = {}
        ttls: dict[str, int] = {}
        for target, entity_id, kind, name, payload in rows:
            if kind == "c":
                clock = int(orjson.loads(payload)[""])  # padded text
                for fs in self.by_stream.get(target, ()):
                    key = layout.entity_key(fs, entity_id)
                    fields.setdefault(key, {})[layout.STAMP_FIELD] = str(clock).encode()
                    ttls[key] = self.ttl_ms[fs.ref]
                    prune = self._prune(fs, key, clock)
                    if prune:
                        prunes[key] = prune
                continue
            fs = self.sets[target]
            key = layout.entity_key(fs, entity_id)
            field, value = self._field(fs, kind, name, payload)
            fields.setdefault(key, {})[field] = value
            ttls[key] = self.ttl_ms[fs.ref]
        return [KeyWrite(key, values, ttl_ms=ttls[key], prune_tiles=prunes.get(key, ()))
                for key, values in fields.items()]

    def _field(self, fs: FeatureSet, kind: str, name: str, payload: str) -> tuple[str, bytes]:
        if kind == "t":
            hop, index = name.split(":")
            return layout.tile_field(int(hop), int(index)), orjson.dumps(self._tile(fs, payload))
        if kind == "v":
            return layout.latest_field(name), orjson.dumps(self._latest(fs, name, payload))
        if kind == "l":
            return layout.list_field(name), orjson.dumps(self._items(fs, name, payload))
        raise ValueError(f"unknown write kind {kind!r}")

    def _tile(self, fs: FeatureSet, payload: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, text in orjson.loads(payload).items():
            head, _, value = key.partition(PART)
            feature, _, bucket = head.partition(tiles.SEP)
            op = self.ops[(fs.ref, feature)]
            buckets = out.setdefault(feature, {})
            if op == "distinct_count":
                buckets.setdefault(bucket, []).append(value)
                continue
            partial = orjson.loads(text)
            if op == "sum":
                partial = float(partial)
            elif op == "avg":
                partial = [float(partial[0]), int(partial[1])]
            buckets[bucket] = partial
        for feature, buckets in out.items():
            if self.ops[(fs.ref, feature)] == "distinct_count":
                for bucket in buckets:
                    buckets[bucket] = sorted(buckets[bucket])
        return out

    def _latest(self, fs: FeatureSet, name: str, payload: str) -> dict[str, Any]:
        feature = fs.feature(name)
        assert isinstance(feature, Latest)
        nested = self.nested[fs.ref]
        out: dict[str, Any] = {}
        for per, pick in orjson.loads(payload).items():
            event_ts, deleted, expires, *values = orjson.loads(pick[pick.index(PICK) + 1:])
            out[per] = None if deleted else {
                "ts": event_ts, "exp": expires,
                "values": {f: _untag(v) if f in nested else v
                           for f, v in zip(feature.fields, values, strict=True)}}
        return out

    def _items(self, fs: FeatureSet, name: str, payload: str) -> list[dict[str, Any]]:
        feature = fs.feature(name)
        assert isinstance(feature, LastN)
        items = {item: orjson.loads(value) for item, value in orjson.loads(payload).items()}
        newest = sorted(((parts[0], item) for item, parts in items.items()),
                        reverse=True)[:feature.n]
        out = []
        for item_ts, item in newest:
            _, status, *picks = items[item]
            out.append({"item": item, "ts": item_ts, "status": _picked(status),
                        **{f: _picked(p) for f, p in zip(feature.fields, picks, strict=True)}})
        return out

    def _prune(self, fs: FeatureSet, key: str, clock: int) -> tuple[tuple[int, int], ...]:
        """Once per key and day of its clock (``incremental._prune``'s cut, made Redis-side)."""
        day = clock // DAY_MS
        if self.pruned.get(key) == day:
            return ()
        self.pruned[key] = day
        self.pruned.move_to_end(key)
        if len(self.pruned) > PRUNED_KEYS_REMEMBERED:
            self.pruned.popitem(last=False)
        return tuple((hop, clock // hop - longest // hop + 1)
                     for hop, longest in sorted(tile_retention(fs).items()))

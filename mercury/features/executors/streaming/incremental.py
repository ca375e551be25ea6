"""Incremental state of one feature set for one entity, and the store writes it implies.

This is what a streaming engine keeps in keyed state (the PyFlink job holds the dict returned
by ``new_state`` in a ValueState). ``apply`` folds one deduplicated event in; ``render`` turns
what changed into whole-field overwrites of the online store (see ``mercury.online.layout``).
Everything is a plain dict of plain values, so it pickles and checkpoints as is;
``encode_state``/``decode_state`` give it a JSON form for state that leaves the engine (the warm
start's per-entity bootstrap in the online store: JSON, because unpickling bytes read from a
shared store would run whatever they say).

Order of arrival never matters: tiles merge commutatively, last-N items keep every event of an
item and pick values by rank, latest values compare the events' total order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, TypedDict, cast

import orjson

from mercury.durations import parse_duration
from mercury.features.definition.dsl import Aggregate, LastN, Latest
from mercury.features.definition.filters import passes
from mercury.features.definition.semantics import MAX_LATENESS_MS
from mercury.features.definition.windows import window
from mercury.features.executors import tiles
from mercury.online import layout
from mercury.online.store import KeyWrite

if TYPE_CHECKING:
    from mercury.features.definition.dsl import FeatureSet, Source
    from mercury.features.executors.events import FeatureEvent

Slot = tuple[int, int]  # a tile: (hop_ms, index)
# One event of a last-N item: (status rank, event_ts, event_id, status, {field: value}).
ItemEvent = tuple[int, int, str, Any, dict[str, Any]]
# The newest value of a latest feature, per ``per`` value: (order, event_ts, {field: value} or
# None for a delete, expiry time or None).
LatestEntry = tuple[tuple[Any, ...], int, dict[str, Any] | None, Any]


class SetState(TypedDict):
    """One entity's state for one feature set: plain dicts of plain values (``new_state``)."""
    clock: int | None  # the newest event time folded in, capped by its arrival
    tiles: dict[Slot, dict[str, dict[str, Any]]]  # slot -> feature -> bucket -> partial
    items: dict[str, dict[Any, dict[str, ItemEvent]]]  # feature -> item key -> event id -> ...
    latest: dict[str, dict[str, LatestEntry]]  # feature -> per value ("" without per) -> ...


@dataclass
class Touched:
    tiles: set[Slot] = field(default_factory=set)
    lists: set[str] = field(default_factory=set)      # feature names
    latest: set[str] = field(default_factory=set)     # feature names
    pruned: set[Slot] = field(default_factory=set)    # tiles no window can reach any more

    def __bool__(self) -> bool:
        return bool(self.tiles or self.lists or self.latest or self.pruned)


def new_state() -> SetState:
    return {"clock": None, "tiles": {}, "items": {}, "latest": {}}


def hops_of(feature: Aggregate) -> set[int]:
    return {window(text).hop_ms for text in feature.windows}


@cache
def tile_retention(feature_set: FeatureSet) -> dict[int, int]:
    """hop -> the longest window using it: older tiles can never be read again."""
    longest: dict[int, int] = {}
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            for text in feature.windows:
                w = window(text)
                longest[w.hop_ms] = max(longest.get(w.hop_ms, 0), w.length_ms)
    return longest


def apply(feature_set: FeatureSet, state: SetState, event: FeatureEvent) -> Touched:
    touched = Touched()
    source, row = feature_set.source, event.row
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            _add_to_tiles(feature, source, state, event, touched)
        elif isinstance(feature, LastN):
            _add_to_items(feature, state, event, touched)
        elif isinstance(feature, Latest) and passes(feature.where, row):
            _set_latest(feature, state, event, touched)
    # The clock (what pruning and the ``_ts`` stamp go by) never runs ahead of arrivals: an
    # event stamped by a fast producer clock (up to the contract's bound) is counted at its
    # event time, but cannot make tiles that reads now still need look expired.
    seen_at = min(event.event_ts, event.arrival_ts)
    if state["clock"] is None or seen_at > state["clock"]:
        state["clock"] = seen_at
        _prune(feature_set, state, touched)
    return touched


def _add_to_tiles(feature: Aggregate, source: Source, state: SetState, event: FeatureEvent,
                  touched: Touched) -> None:
    bucket = tiles.bucket_of(feature, source, event.row)
    if bucket is None:
        return
    value = None if feature.column is None else event.row[feature.column]
    for hop in hops_of(feature):
        slot = (hop, event.event_ts // hop)
        partials = state["tiles"].setdefault(slot, {}).setdefault(feature.name, {})
        partials[bucket] = tiles.add(feature.op, partials.get(bucket), value)
        touched.tiles.add(slot)


def _add_to_items(feature: LastN, state: SetState, event: FeatureEvent,
                  touched: Touched) -> None:
    row = event.row
    key = row.get(feature.item_key)
    if key is None or not passes(feature.where, row):
        return
    status = row.get(feature.status)
    ranks: dict[object, int] = dict(feature.status_rank)
    rank = ranks.get(status, 0)
    values = {name: row[name] for name in feature.fields if row.get(name) is not None}
    item = state["items"].setdefault(feature.name, {}).setdefault(key, {})
    item[event.event_id] = (rank, event.event_ts, event.event_id, status, values)
    touched.lists.add(feature.name)


def _set_latest(feature: Latest, state: SetState, event: FeatureEvent,
                touched: Touched) -> None:
    if feature.per is not None and event.row.get(feature.per) is None:
        return  # nothing to file it under
    per = "" if feature.per is None else str(event.row[feature.per])
    current = state["latest"].setdefault(feature.name, {}).get(per)
    if current is not None and tuple(current[0]) >= event.order:
        return  # an older (or the same) event never overwrites newer state
    values = None if event.deleted else {name: event.row.get(name) for name in feature.fields}
    expires = event.row.get(feature.expires) if feature.expires else None
    state["latest"][feature.name][per] = (event.order, event.event_ts, values, expires)
    touched.latest.add(feature.name)


def _prune(feature_set: FeatureSet, state: SetState, touched: Touched) -> None:
    clock = cast(int, state["clock"])  # ``apply`` has just set it
    for hop, longest in tile_retention(feature_set).items():
        first_needed = clock // hop - longest // hop + 1
        for slot in [s for s in state["tiles"] if s[0] == hop and s[1] < first_needed]:
            del state["tiles"][slot]
            touched.pruned.add(slot)
    for feature in feature_set.features:
        if isinstance(feature, LastN) and feature.name in state["items"]:
            items = state["items"][feature.name]
            keep = {key for key, _ in _newest(items, feature.n)}
            for key in [k for k in items if k not in keep
                        and _item_ts(items[k]) < clock - MAX_LATENESS_MS]:
                del items[key]
    touched.tiles -= touched.pruned


def _item_ts(events: dict[str, ItemEvent]) -> int:
    return min(e[1] for e in events.values())


def _newest(items: dict[Any, dict[str, ItemEvent]],
            n: int) -> list[tuple[Any, dict[str, ItemEvent]]]:
    return sorted(items.items(), key=lambda kv: (_item_ts(kv[1]), kv[0]), reverse=True)[:n]


def materialize_items(feature: LastN, items: dict[Any, dict[str, ItemEvent]]
                      ) -> list[dict[str, Any]]:
    """The top ``n`` items, newest first, each merged from its events by rank."""
    out = []
    for key, events in _newest(items, feature.n):
        ranked = sorted(events.values(), key=lambda e: (e[0], e[1], e[2]), reverse=True)
        item = {"item": key, "ts": _item_ts(events), "status": ranked[0][3]}
        for name in feature.fields:
            item[name] = next((e[4][name] for e in ranked if name in e[4]), None)
        out.append(item)
    return out


def render(feature_set: FeatureSet, state: SetState, touched: Touched,
           entity_id: str) -> KeyWrite:
    fields: dict[str, bytes] = {}
    for slot in touched.tiles:
        fields[layout.tile_field(*slot)] = orjson.dumps(state["tiles"][slot])
    for name in touched.lists:
        feature = cast(LastN, feature_set.feature(name))  # lists are last-N features
        fields[layout.list_field(name)] = orjson.dumps(
            materialize_items(feature, state["items"][name]))
    for name in touched.latest:
        fields[layout.latest_field(name)] = orjson.dumps({
            per: None if values is None else {"ts": ts, "exp": expires, "values": values}
            for per, (_, ts, values, expires) in state["latest"][name].items()})
    fields[layout.STAMP_FIELD] = str(state["clock"]).encode()
    return KeyWrite(
        key=layout.entity_key(feature_set, entity_id), set_fields=fields,
        delete_fields=tuple(layout.tile_field(*slot) for slot in sorted(touched.pruned)),
        ttl_ms=parse_duration(feature_set.ttl))


def render_all(feature_set: FeatureSet, state: SetState, entity_id: str) -> KeyWrite:
    """The whole state as one write that replaces the hash: what a warm start writes, so a
    re-run leaves no field of an earlier run behind."""
    touched = Touched(tiles=set(state["tiles"]), lists=set(state["items"]),
                      latest=set(state["latest"]))
    write = render(feature_set, state, touched, entity_id)
    return KeyWrite(write.key, write.set_fields, (), write.ttl_ms, replace=True)


# ---- a JSON form of the state ---------------------------------------------------------------
# JSON has no tuples and only string keys: tiles are keyed "<hop>:<index>", items are kept as
# [item key, events] pairs (an item key may be a number), and tuples are rebuilt on decoding so
# a decoded state equals the original and folds on exactly as it would have.

STATE_FORMAT = 1


def encode_state(state: SetState) -> bytes:
    return orjson.dumps({
        "format": STATE_FORMAT,
        "clock": state["clock"],
        "tiles": {f"{hop}:{index}": partials for (hop, index), partials in state["tiles"].items()},
        "items": {name: [[key, events] for key, events in items.items()]
                  for name, items in state["items"].items()},
        "latest": state["latest"],
    })


def decode_state(raw: bytes) -> SetState:
    data = orjson.loads(raw)
    if data.get("format") != STATE_FORMAT:
        raise ValueError(f"feature state format {data.get('format')!r}, expected {STATE_FORMAT}")
    tiles = {}
    for slot, partials in data["tiles"].items():
        hop, index = slot.split(":")
        tiles[(int(hop), int(index))] = partials
    items = {name: {key: {event_id: tuple(entry) for event_id, entry in events.items()}
                    for key, events in pairs}
             for name, pairs in data["items"].items()}
    latest = {name: {per: (tuple(order), ts, values, expires)
                      for per, (order, ts, values, expires) in entries.items()}
              for name, entries in data["latest"].items()}
    return {"clock": data["clock"], "tiles": tiles, "items": items, "latest": latest}

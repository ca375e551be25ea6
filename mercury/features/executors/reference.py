"""The reference executor: feature values computed directly from events, in plain Python.

Design notes: docs/STREAMING.md, "The reference executor (the oracle) in detail".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from mercury.contracts import registry
from mercury.contracts.validation import validator
from mercury.durations import parse_duration
from mercury.features.definition.dsl import Aggregate, Feature, FeatureSet, Filter, LastN, Latest
from mercury.features.definition.semantics import MAX_LATENESS_MS
from mercury.features.definition.windows import window
from mercury.features.executors.events import FeatureEvent, normalise


def reference_values(feature_sets: Iterable[FeatureSet], arrivals: Iterable[tuple[str, bytes]],
                     as_of_ms: int) -> dict[tuple[str, str], dict[str, object]]:
    """``{(feature_set.ref, entity_id): {feature: value}}`` as of ``as_of_ms``.

    ``arrivals`` are ``(stream_name, payload)`` in the order records reached the log.
    """
    feature_sets = tuple(feature_sets)
    events: dict[str, list[FeatureEvent]] = {fs.ref: [] for fs in feature_sets}
    read = {fs.source.stream for fs in feature_sets}
    for stream_name, payload in arrivals:
        if stream_name not in read:
            continue
        record = valid_record(stream_name, payload)
        if record is None:
            continue
        for fs in feature_sets:
            if fs.source.stream == stream_name:
                event = normalise(fs, record)
                if event is not None:
                    events[fs.ref].append(event)
    return {(fs.ref, entity_id): values
            for fs in feature_sets
            for entity_id, values in values_for(fs, events[fs.ref], as_of_ms).items()}


def valid_record(stream_name: str, payload: bytes) -> dict[str, Any] | None:
    """The record if the payload passes its stream's contract; None sends it to dead letters."""
    verdict = validator(registry.stream(stream_name).schema_subject).validate_bytes(payload)
    return verdict.record if verdict.ok else None


def values_for(feature_set: FeatureSet, events: list[FeatureEvent],
               as_of_ms: int) -> dict[str, dict[str, object]]:
    """``{entity_id: {feature: value}}`` from one feature set's events in arrival order."""
    by_entity: dict[str, list[FeatureEvent]] = defaultdict(list)
    for event in first_arrivals(events):
        if counts(event, as_of_ms):
            by_entity[event.entity_id].append(event)
    return {entity_id: {f.name: feature_value(feature_set, f, entity_events, as_of_ms)
                        for f in feature_set.features}
            for entity_id, entity_events in by_entity.items()}


def first_arrivals(events: Iterable[FeatureEvent]) -> list[FeatureEvent]:
    """Effectively-once: a repeated event_id (a producer retry, a replay) is ignored."""
    seen: set[str] = set()
    kept: list[FeatureEvent] = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            kept.append(event)
    return kept


def counts(event: FeatureEvent, as_of_ms: int) -> bool:
    """Bitemporal: it had happened and reached the log by then, and was not too late."""
    too_late = event.event_ts < event.arrival_ts - MAX_LATENESS_MS
    return event.arrival_ts <= as_of_ms and event.event_ts <= as_of_ms and not too_late


# Filter ops on a row's value (``Filter.value`` is the argument; a tuple for in/not_in).
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda value, arg: value == arg,
    "ne": lambda value, arg: value != arg,
    "in": lambda value, arg: value in arg,
    "not_in": lambda value, arg: value not in arg,
    "not_null": lambda value, arg: value is not None,
    "is_null": lambda value, arg: value is None,
}


def passes(where: tuple[Filter, ...], row: Mapping[str, Any]) -> bool:
    """The AND of the filters."""
    return all(_OPS[f.op](row.get(f.column), f.value) for f in where)


def feature_value(feature_set: FeatureSet, feature: Feature, events: list[FeatureEvent],
                  as_of_ms: int) -> object:
    events = [e for e in events if passes(feature.where, e.row)]
    if isinstance(feature, Aggregate):
        return {window(text).label:
                aggregate(feature_set, feature, in_window(events, text, as_of_ms))
                for text in feature.windows}
    if isinstance(feature, LastN):
        return last_n(feature, events)
    if isinstance(feature, Latest):
        return latest(feature, events, as_of_ms)
    raise TypeError(f"unknown feature kind {feature!r}")


def in_window(events: list[FeatureEvent], text: str, as_of_ms: int) -> list[FeatureEvent]:
    return [e for e in events if window(text).covers(e.event_ts, as_of_ms)]


def _key(value: object) -> str:
    return "unknown" if value is None else str(value)


def aggregate(feature_set: FeatureSet, feature: Aggregate, events: list[FeatureEvent]) -> object:
    """One window's value: a leaf, or leaves nested by group then currency."""
    column = feature.column
    contributing = [e for e in events if column is None or e.row.get(column) is not None]
    currency = feature_set.source.currency_of(column) if column else None
    nesting = [c for c in (feature.group_by, currency) if c is not None]
    if not nesting:
        return _leaf(feature, contributing)
    buckets: dict[tuple[str, ...], list[FeatureEvent]] = defaultdict(list)
    for event in contributing:
        buckets[tuple(_key(event.row.get(c)) for c in nesting)].append(event)
    nested: dict[str, Any] = {}
    for path, bucket in buckets.items():
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _leaf(feature, bucket)
    return nested


def _leaf(feature: Aggregate, events: list[FeatureEvent]) -> object:
    if feature.op == "count":
        return len(events)
    column = cast(str, feature.column)  # only a count has none, and it returned above
    values = [e.row[column] for e in events]
    if feature.op == "sum":
        return math.fsum(values)  # exactly rounded, so summation order cannot matter
    if feature.op == "avg":
        return math.fsum(values) / len(values) if values else None
    if feature.op == "min":
        return min(values, default=None)
    if feature.op == "max":
        return max(values, default=None)
    return len(set(values))  # distinct_count


def last_n(feature: LastN, events: list[FeatureEvent]) -> list[dict[str, Any]]:
    items: dict[object, list[FeatureEvent]] = defaultdict(list)
    for event in events:
        key = event.row.get(feature.item_key)
        if key is not None:
            items[key].append(event)
    newest = sorted(items, key=lambda k: (min(e.event_ts for e in items[k]), k), reverse=True)
    return [_item(feature, key, items[key]) for key in newest[: feature.n]]


def _item(feature: LastN, key: object, events: list[FeatureEvent]) -> dict[str, Any]:
    ranks: dict[object, int] = dict(feature.status_rank)

    def strength(e: FeatureEvent) -> tuple[int, int, str]:
        # A settlement outranks its authorisation whatever order they arrived in.
        return ranks.get(e.row.get(feature.status), 0), e.event_ts, e.event_id

    item = {"item": key, "ts": min(e.event_ts for e in events),
            "status": max(events, key=strength).row.get(feature.status)}
    for name in feature.fields:
        having = [e for e in events if e.row.get(name) is not None]
        item[name] = max(having, key=strength).row[name] if having else None
    return item


def latest(feature: Latest, events: list[FeatureEvent], as_of_ms: int) -> dict[str, Any] | None:
    if feature.per is None:
        return _newest_value(feature, events, as_of_ms)
    by_key: dict[str, list[FeatureEvent]] = defaultdict(list)
    for event in events:
        if event.row.get(feature.per) is not None:
            by_key[str(event.row[feature.per])].append(event)
    values = {key: _newest_value(feature, group, as_of_ms) for key, group in by_key.items()}
    return {key: value for key, value in values.items() if value is not None}


def _newest_value(feature: Latest, events: list[FeatureEvent],
                  as_of_ms: int) -> dict[str, Any] | None:
    if not events:
        return None
    newest = max(events, key=lambda e: e.order)
    if newest.deleted:
        return None
    age = as_of_ms - newest.event_ts
    if feature.max_age is not None and age > parse_duration(feature.max_age):
        return None
    expires = newest.row.get(feature.expires) if feature.expires else None
    if expires is not None and expires <= as_of_ms:
        return None
    return {**{name: newest.row.get(name) for name in feature.fields}, "ts": newest.event_ts}

"""Point-in-time feature values as one DuckDB query, generated from a compiled feature set.

The query reads a ``queries`` relation (``q, entity_id, as_of``) and an events relation in
``spark.executor.EVENT_COLUMNS``, and yields ``q, present`` and one JSON column per feature,
the value the reference executor gives for the entity as of ``as_of`` (``reference.values_for``).
Design notes: docs/BATCH.md, "Training sets on DuckDB".

Bitemporal time becomes one column: an event counts as of t iff it happened and had arrived by
then, i.e. ``visible_from = greatest(event_ts, arrival_ts) <= t``. So a ``Latest`` is a running
arg-max over the entity's events sorted by ``visible_from`` and an ``ASOF`` join picks, per
label, the last step at or before its time: no label ever meets every event of its entity.
Aggregates and last-N lists join each label to its entity's visible events and group.

A spec this generator cannot hold to the reference is refused (``Unsupported``), naming the
feature, rather than computed differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pyarrow as pa

from mercury.durations import parse_duration
from mercury.features.definition.dsl import Aggregate, FeatureSet, Filter, LastN, Latest
from mercury.features.definition.semantics import MAX_LATENESS_MS
from mercury.features.definition.windows import window

_NO_KEY = "unknown"  # the reference's key for a None group or currency value


class Unsupported(ValueError):
    """A feature the DuckDB executor cannot compute exactly as the reference does."""


@dataclass(frozen=True)
class SetQuery:
    """The CTEs of one feature set (prefixed ``prefix``) and the columns they offer."""
    ctes: list[str]
    present: str                # a boolean SQL expression over the query row ``q``
    values: dict[str, str]      # feature name -> its JSON SQL expression


def literal(value: object, feature: str) -> str:
    """A filter value as SQL; a type we cannot compare as Python does is refused."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise Unsupported(f"{feature}: a filter value {value!r} ({type(value).__name__}) has no "
                      "SQL form that compares as Python does")


def row(name: str, alias: str = "") -> str:
    """A column of an event's row (of the relation ``alias``, if given)."""
    return f'{alias + "." if alias else ""}"row"."{name}"'


def passes(where: Sequence[Filter], feature: str, alias: str = "") -> str:
    """The AND of the filters with Python's None semantics (``None != x`` is true)."""
    tests = []
    for f in where:
        value = row(f.column, alias)
        if f.op == "not_null":
            tests.append(f"{value} IS NOT NULL")
        elif f.op == "is_null":
            tests.append(f"{value} IS NULL")
        elif f.op in ("eq", "ne"):
            test = f"{value} IS NULL" if f.value is None else \
                f"({value} IS NOT NULL AND {value} = {literal(f.value, feature)})"
            tests.append(test if f.op == "eq" else f"NOT ({test})")
        else:  # in, not_in: the DSL keeps the values as a tuple
            values = cast("tuple[object, ...]", f.value)
            present = [literal(v, feature) for v in values if v is not None]
            test = f"({value} IS NOT NULL AND {value} IN ({', '.join(present)}))" \
                if present else "FALSE"
            if None in values:
                test = f"({test} OR {value} IS NULL)"
            tests.append(test if f.op == "in" else f"NOT {test}")
    return " AND ".join(tests) or "TRUE"


def _key(column: str, dtype: pa.DataType, feature: str) -> str:
    """``str(value)`` as the reference spells a group or currency key; None -> "unknown"."""
    value = row(column)
    if pa.types.is_boolean(dtype):
        text = f"CASE WHEN {value} THEN 'True' ELSE 'False' END"
    elif pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or \
            pa.types.is_integer(dtype):
        text = f"CAST({value} AS VARCHAR)"
    else:  # Python's float repr and SQL's differ (1e16, nan): refuse rather than differ
        raise Unsupported(f"{feature}: a key on {column!r} of type {dtype} is not spelled as "
                          "the reference spells it")
    return f"coalesce({text}, '{_NO_KEY}')"


def set_query(prefix: str, feature_set: FeatureSet, events: str,
              row_type: pa.StructType) -> SetQuery:
    """The CTEs computing every feature of ``feature_set`` for every row of ``queries``."""
    types = {f.name: f.type for f in row_type}
    latest = {i: f for i, f in enumerate(feature_set.features)
              if isinstance(f, Latest) and f.per is None}
    ctes = [
        # Effectively-once: the first arrival of each event id (found on the narrow columns
        # only: carrying whole rows through the grouping costs 10x), then the hostile-time rule.
        f"{prefix}_first AS (SELECT min(log_pos) AS log_pos FROM {events} GROUP BY event_id)",
        f"{prefix}_events AS (SELECT *, greatest(event_ts, arrival_ts) AS visible_from "
        f"FROM {events} WHERE log_pos IN (SELECT log_pos FROM {prefix}_first) "
        f"AND event_ts >= arrival_ts - {MAX_LATENESS_MS})",
        *_timeline(prefix, latest),
    ]
    if any(not isinstance(f, Latest) for f in feature_set.features):
        ctes.append(f"{prefix}_hits AS (SELECT queries.q, queries.as_of, e.* FROM queries "
                    f"JOIN {prefix}_events e ON e.entity_id = queries.entity_id "
                    "AND e.visible_from <= queries.as_of)")
    values = {}
    for i, feature in enumerate(feature_set.features):
        name = f"{prefix}_f{i}"
        if isinstance(feature, Latest):
            more, value = _latest_per(name, prefix, feature, types) if feature.per else \
                _latest(name, prefix, i, feature)
        elif isinstance(feature, Aggregate):
            more, value = _aggregate(name, prefix, feature_set, feature, types)
        elif isinstance(feature, LastN):
            more, value = _last_n(name, prefix, feature)
        else:
            raise Unsupported(f"{feature_set.ref}: feature {feature!r} is of an unknown kind")
        ctes += more
        values[feature.name] = value
    return SetQuery(ctes, f"{prefix}_asof.present", values)


# ---- Latest: a running newest per entity, then an as-of join -------------------------------

def _timeline(prefix: str, latest: dict[int, Latest]) -> list[str]:
    """Per label: whether its entity had any counted event (``present``) and, per ``Latest``
    feature i without ``per``, the greatest ``order_num`` of its counted events (``best_i``).

    Events and labels in one stream per entity, sorted by time (an event at a label's own
    time first: it counts), with running aggregates over it: one sort, no label ever meets
    every event of its entity.
    """
    flags = ", ".join(f"{passes(f.where, f.name)} AS f{i}" for i, f in latest.items())
    nulls = ", ".join(f"NULL AS f{i}" for i in latest)
    bests = "".join(f", max(order_num) FILTER (WHERE f{i}) OVER w AS best{i}" for i in latest)
    return [
        f"{prefix}_timeline AS (SELECT entity_id, visible_from AS t, 0 AS kind, "
        f"NULL::BIGINT AS q, order_num{', ' + flags if flags else ''} FROM {prefix}_events "
        f"UNION ALL SELECT entity_id, as_of, 1, q, NULL{', ' + nulls if nulls else ''} "
        "FROM queries)",
        f"{prefix}_asof AS (SELECT q, t AS as_of, entity_id, count(order_num) OVER w > 0 "
        f"AS present{bests} FROM {prefix}_timeline "
        "WINDOW w AS (PARTITION BY entity_id ORDER BY t, kind ROWS UNBOUNDED PRECEDING) "
        "QUALIFY kind = 1)"]


def _payload(feature: Latest) -> str:
    """The newest event's columns, chosen among those of the greatest ``order_num`` by the
    greatest tie, then the first arrival (Python's max keeps the first)."""
    expires = row(feature.expires, "e") if feature.expires else "NULL::BIGINT"
    fields = ", ".join(["deleted := e.deleted", "event_ts := e.event_ts",
                        f"expires := {expires}",
                        *(f'"{field}" := {row(field, "e")}' for field in feature.fields)])
    return f"arg_max(struct_pack({fields}), struct_pack(t := e.order_tie, p := -e.log_pos))"


def _shown(feature: Latest) -> tuple[str, str]:
    """(hidden, value) over the newest event ``n`` as of ``as_of``: deleted, expired or too
    old hides it."""
    hidden = ["n.deleted", "(n.expires IS NOT NULL AND n.expires <= as_of)"]
    if feature.max_age is not None:
        hidden.append(f"as_of - n.event_ts > {parse_duration(feature.max_age)}")
    shown = ", ".join([*(f'"{field}" := n."{field}"' for field in feature.fields),
                       "ts := n.event_ts"])
    return " OR ".join(hidden), f"struct_pack({shown})"


def _latest(name: str, prefix: str, i: int, feature: Latest) -> tuple[list[str], str]:
    hidden, value = _shown(feature)
    return [
        f"{name}_newest AS (SELECT p.q, p.as_of, {_payload(feature)} AS n "
        f"FROM {prefix}_asof p JOIN {prefix}_events e ON e.entity_id = p.entity_id "
        f"AND e.order_num = p.best{i} AND e.visible_from <= p.as_of "
        f"AND {passes(feature.where, feature.name, 'e')} "
        "GROUP BY p.q, p.as_of)",
        f"{name} AS (SELECT q, to_json(CASE WHEN NOT ({hidden}) THEN {value} END) AS value "
        f"FROM {name}_newest)"], f"{name}.value"


def _latest_per(name: str, prefix: str, feature: Latest,
                types: dict[str, pa.DataType]) -> tuple[list[str], str]:
    """A newest value per key: the running max of ``order_num`` per (entity, key), and one
    as-of join per (label, key of its entity)."""
    column = cast(str, feature.per)
    key = _key(column, types[column], feature.name)
    ctes = [
        f"{name}_events AS (SELECT *, {key} AS per FROM {prefix}_events "
        f"WHERE {passes(feature.where, feature.name)} AND {row(column)} IS NOT NULL)",
        f"{name}_series AS (SELECT entity_id, per, visible_from, max(order_num) OVER "
        "(PARTITION BY entity_id, per ORDER BY visible_from "
        f"RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS best FROM {name}_events)",
        f"{name}_keys AS (SELECT DISTINCT entity_id, per FROM {name}_events)",
        f"{name}_picked AS (SELECT queries.q, queries.as_of, s.entity_id, s.per, s.best "
        f"FROM queries JOIN {name}_keys k ON k.entity_id = queries.entity_id "
        f"ASOF JOIN {name}_series s ON s.entity_id = queries.entity_id AND s.per = k.per "
        "AND queries.as_of >= s.visible_from)",
        f"{name}_newest AS (SELECT p.q, p.as_of, p.per, {_payload(feature)} AS n "
        f"FROM {name}_picked p JOIN {name}_events e ON e.entity_id = p.entity_id "
        "AND e.per = p.per AND e.order_num = p.best AND e.visible_from <= p.as_of "
        "GROUP BY p.q, p.as_of, p.per)"]
    hidden, value = _shown(feature)
    ctes.append(f"{name} AS (SELECT q, to_json(map_from_entries(list(struct_pack(k := per, "
                f"v := {value})) FILTER (WHERE NOT ({hidden})))) AS value "
                f"FROM {name}_newest GROUP BY q)")
    return ctes, f"coalesce({name}.value, '{{}}')"


# ---- Aggregates: per window, buckets by group and currency ---------------------------------

def _leaf(feature: Aggregate, dtype: pa.DataType | None) -> str:
    value = row(feature.column) if feature.column else ""
    integral = dtype is not None and pa.types.is_integer(dtype)
    if feature.op == "count":
        return "count(*)"
    if feature.op == "sum":  # fsum: exactly rounded, as the reference's math.fsum
        return f"CAST(sum({value}) AS DOUBLE)" if integral else f"fsum({value})"
    if feature.op == "avg":
        total = f"CAST(sum({value}) AS DOUBLE)" if integral else f"fsum({value})"
        return f"{total} / count(*)"
    if feature.op in ("min", "max"):
        return f"{feature.op}({value})"
    # distinct_count: -0.0 + 0.0 is 0.0, so 0.0 and -0.0 count once, as in a Python set.
    floating = dtype is not None and pa.types.is_floating(dtype)
    return f"count(DISTINCT {value} + 0.0)" if floating else f"count(DISTINCT {value})"


def _empty(feature: Aggregate, keyed: bool) -> str:
    """What the reference gives a window with no events."""
    if keyed:
        return "'{}'"
    if feature.op in ("count", "distinct_count"):
        return "'0'"
    return "'0.0'" if feature.op == "sum" else "'null'"


def _aggregate(name: str, prefix: str, feature_set: FeatureSet, feature: Aggregate,
               types: dict[str, pa.DataType]) -> tuple[list[str], str]:
    currency = feature_set.source.currency_of(feature.column) if feature.column else None
    keys = [(label, _key(column, types[column], feature.name))
            for label, column in (("g", feature.group_by), ("c", currency)) if column]
    condition = passes(feature.where, feature.name)
    if feature.column:
        condition += f" AND {row(feature.column)} IS NOT NULL"
    leaf = _leaf(feature, types.get(feature.column) if feature.column else None)
    ctes, fields = [], []
    for w, text in enumerate(feature.windows):
        spec = window(text)
        # The oldest tile the window covers as of t starts at tile_start(t) - W + hop.
        first = f"as_of - ((as_of % {spec.hop_ms}) + {spec.hop_ms}) % {spec.hop_ms} " \
                f"- {spec.length_ms - spec.hop_ms}"
        where = f"{condition} AND event_ts >= {first}"
        cte = f"{name}_w{w}"
        selected = ", ".join(f"{sql} AS {label}" for label, sql in keys)
        grouped = ", ".join(["q", *(label for label, _ in keys)])
        buckets = f"SELECT q, {selected + ', ' if selected else ''}{leaf} AS leaf " \
                  f"FROM {prefix}_hits WHERE {where} GROUP BY {grouped}"
        # Nest the buckets innermost first: currency inside group, as the reference does.
        value, level = "leaf", [label for label, _ in keys]
        while level:
            inner = level.pop()
            outer = ", ".join(["q", *level])
            buckets = (f"SELECT {outer}, map_from_entries(list(struct_pack(k := {inner}, "
                       f"v := {value}))) AS nested FROM ({buckets}) GROUP BY {outer}")
            value = "nested"
        ctes.append(f"{cte} AS (SELECT q, to_json({value}) AS value FROM ({buckets}))")
        fields.append((spec.label, cte))
    joins = " ".join(f"LEFT JOIN {cte} USING (q)" for _, cte in fields)
    empty = _empty(feature, bool(keys))
    packed = ", ".join(f'"{label}" := coalesce({cte}.value, {empty})::JSON'
                       for label, cte in fields)
    ctes.append(f"{name} AS (SELECT q, to_json(struct_pack({packed})) AS value "
                f"FROM (SELECT DISTINCT q FROM {prefix}_hits) {joins})")
    return ctes, f"{name}.value"


# ---- LastN: items merged from their events, newest first ------------------------------------

def _last_n(name: str, prefix: str, feature: LastN) -> tuple[list[str], str]:
    rank = "CASE " + " ".join(f"WHEN {row(feature.status)} = {literal(s, feature.name)} "
                              f"THEN {r}" for s, r in feature.status_rank) + " ELSE 0 END" \
        if feature.status_rank else "0"
    strength = f"struct_pack(r := {rank}, ts := event_ts, id := event_id)"
    # arg_max_null keeps a null status of the strongest event, as the reference's max does.
    picked = [f'arg_max_null({row(feature.status)}, {strength}) AS "status"',
              *(f'arg_max({row(field)}, {strength}) FILTER (WHERE {row(field)} IS NOT NULL) '
                f'AS "{field}"' for field in feature.fields)]
    items = (f"{name}_items AS (SELECT q, {row(feature.item_key)} AS item, "
             f"min(event_ts) AS ts, {', '.join(picked)} FROM {prefix}_hits "
             f"WHERE {passes(feature.where, feature.name)} AND {row(feature.item_key)} IS NOT NULL "
             f"GROUP BY q, {row(feature.item_key)})")
    entry = ", ".join(["item := item", "ts := ts", '"status" := "status"',
                       *(f'"{field}" := "{field}"' for field in feature.fields)])
    listed = (f"{name} AS (SELECT q, to_json(list(struct_pack({entry}) "
              f"ORDER BY ts DESC, item DESC)[1:{feature.n}]) AS value "
              f"FROM {name}_items GROUP BY q)")
    return [items, listed], f"coalesce({name}.value, '[]')"


# ---- the whole training set ------------------------------------------------------------------

def training_sql(feature_sets: Sequence[FeatureSet], row_types: Sequence[pa.StructType],
                 timestamp_sql: str, row_id: str, columns: Sequence[str]) -> str:
    """The training-set query over ``labels`` (with ``row_id``) and ``events_<i>``: the label
    rows in their order, with a ``columns[j]`` JSON text per feature (null where the entity
    had no counting event by then)."""
    ctes = [f'queries AS (SELECT "{row_id}" AS q, CAST(entity_id AS VARCHAR) AS entity_id, '
            f"{timestamp_sql} AS as_of FROM labels)"]
    selected, joins = [], []
    names = iter(columns)
    for i, (feature_set, row_type) in enumerate(zip(feature_sets, row_types, strict=True)):
        prefix = f"s{i}"
        part = set_query(prefix, feature_set, f"events_{i}", row_type)
        ctes += part.ctes
        joins.append(f"LEFT JOIN {prefix}_asof ON {prefix}_asof.q = queries.q")
        for j, feature in enumerate(feature_set.features):
            joins.append(f"LEFT JOIN {prefix}_f{j} ON {prefix}_f{j}.q = queries.q")
            selected.append(f"CASE WHEN {part.present} THEN "
                            f'CAST({part.values[feature.name]} AS VARCHAR) END AS "{next(names)}"')
    body = ",\n  ".join([f'labels.* EXCLUDE ("{row_id}")', *selected])
    return ("WITH " + ",\n".join(ctes) +
            f"\nSELECT {body}\nFROM labels JOIN queries ON queries.q = labels.\"{row_id}\"\n" +
            "\n".join(joins) + f'\nORDER BY labels."{row_id}"')

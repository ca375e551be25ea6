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


def row(name: str) -> str:
    return f'"row"."{name}"'


def passes(where: Sequence[Filter], feature: str) -> str:
    """The AND of the filters with Python's None semantics (``None != x`` is true)."""
    tests = []
    for f in where:
        value = row(f.column)
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
    ctes = [
        # Effectively-once: the first arrival of each event id, then the hostile-time rule.
        f"{prefix}_first AS (SELECT * FROM {events} "
        f"QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY log_pos) = 1)",
        f"{prefix}_events AS (SELECT *, greatest(event_ts, arrival_ts) AS visible_from "
        f"FROM {prefix}_first WHERE event_ts >= arrival_ts - {MAX_LATENESS_MS})",
        f"{prefix}_since AS (SELECT entity_id, min(visible_from) AS since "
        f"FROM {prefix}_events GROUP BY entity_id)",
    ]
    if any(not isinstance(f, Latest) for f in feature_set.features):
        ctes.append(f"{prefix}_hits AS (SELECT queries.q, queries.as_of, e.* FROM queries "
                    f"JOIN {prefix}_events e ON e.entity_id = queries.entity_id "
                    "AND e.visible_from <= queries.as_of)")
    values = {}
    for i, feature in enumerate(feature_set.features):
        name = f"{prefix}_f{i}"
        if isinstance(feature, Latest):
            more, value = _latest(name, prefix, feature, types)
        elif isinstance(feature, Aggregate):
            more, value = _aggregate(name, prefix, feature_set, feature, types)
        elif isinstance(feature, LastN):
            more, value = _last_n(name, prefix, feature)
        else:
            raise Unsupported(f"{feature_set.ref}: feature {feature!r} is of an unknown kind")
        ctes += more
        values[feature.name] = value
    return SetQuery(ctes, f"{prefix}_since.since <= queries.as_of", values)


# ---- Latest: a running newest per entity, then an as-of join -------------------------------

def _latest(name: str, prefix: str, feature: Latest,
            types: dict[str, pa.DataType]) -> tuple[list[str], str]:
    expires = row(feature.expires) if feature.expires else "NULL::BIGINT"
    payload = ", ".join(["deleted := deleted", "event_ts := event_ts",
                         f"expires := {expires}",
                         *(f'"{field}" := {row(field)}' for field in feature.fields)])
    # The reference's order, then the first arrival on a tie (Python's max keeps the first).
    order = "struct_pack(n := order_num, t := order_tie, p := -log_pos)"
    key = _key(feature.per, types[feature.per], feature.name) if feature.per else ""
    partition = "entity_id" + (f", {key}" if feature.per else "")
    per = f", {key} AS per" if feature.per else ""
    not_null = f" AND {row(feature.per)} IS NOT NULL" if feature.per else ""
    series = (
        f"{name}_series AS (SELECT entity_id, visible_from{per}, "
        f"arg_max(struct_pack({payload}), {order}) OVER (PARTITION BY {partition} "
        "ORDER BY visible_from RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS newest "
        f"FROM {prefix}_events WHERE {passes(feature.where, feature.name)}{not_null})")
    hidden = ["s.newest.deleted",
              "(s.newest.expires IS NOT NULL AND s.newest.expires <= queries.as_of)"]
    if feature.max_age is not None:
        hidden.append(f"queries.as_of - s.newest.event_ts > {parse_duration(feature.max_age)}")
    shown = ", ".join([*(f'"{field}" := s.newest."{field}"' for field in feature.fields),
                       "ts := s.newest.event_ts"])
    value = f"CASE WHEN NOT ({' OR '.join(hidden)}) THEN struct_pack({shown}) END"
    if feature.per is None:
        return [series, (
            f"{name} AS (SELECT queries.q, to_json({value}) AS value FROM queries "
            f"ASOF JOIN {name}_series s ON s.entity_id = queries.entity_id "
            "AND queries.as_of >= s.visible_from)")], f"{name}.value"
    # One as-of join per (label, key of that entity), then a map of the values not hidden.
    return [series, (
        f"{name}_keys AS (SELECT DISTINCT entity_id, per FROM {name}_series)"), (
        f"{name}_each AS (SELECT queries.q, k.per, {value} AS value FROM queries "
        f"JOIN {name}_keys k ON k.entity_id = queries.entity_id "
        f"ASOF JOIN {name}_series s ON s.entity_id = queries.entity_id AND s.per = k.per "
        "AND queries.as_of >= s.visible_from)"), (
        f"{name} AS (SELECT q, to_json(map_from_entries(list(struct_pack(k := per, v := value)) "
        f"FILTER (WHERE value IS NOT NULL))) AS value FROM {name}_each GROUP BY q)")], \
        f"coalesce({name}.value, '{{}}')"


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
        joins.append(f"LEFT JOIN {prefix}_since ON {prefix}_since.entity_id = queries.entity_id")
        for j, feature in enumerate(feature_set.features):
            joins.append(f"LEFT JOIN {prefix}_f{j} ON {prefix}_f{j}.q = queries.q")
            selected.append(f"CASE WHEN {part.present} THEN "
                            f'CAST({part.values[feature.name]} AS VARCHAR) END AS "{next(names)}"')
    body = ",\n  ".join([f'labels.* EXCLUDE ("{row_id}")', *selected])
    return ("WITH " + ",\n".join(ctes) +
            f"\nSELECT {body}\nFROM labels JOIN queries ON queries.q = labels.\"{row_id}\"\n" +
            "\n".join(joins) + f'\nORDER BY labels."{row_id}"')

"""The PySpark executor of the feature DSL: point-in-time values for training sets and history.

Design notes: docs/BATCH.md, "The Spark executor in detail".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mercury.contracts import registry
from mercury.durations import parse_duration
from mercury.features.definition.columns import used_columns
from mercury.features.definition.dsl import Aggregate, FeatureSet, Filter, LastN, Latest
from mercury.features.definition.semantics import MAX_LATENESS_MS
from mercury.features.definition.windows import Window, window
from mercury.features.executors.agreement import Report, same
from mercury.features.executors.events import FeatureEvent, normalise
from mercury.features.executors.reference import first_arrivals, values_for

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

    from mercury.config import Settings

EVENT_COLUMNS = ("entity_id", "event_id", "event_ts", "arrival_ts", "order_num", "order_tie",
                 "deleted", "log_pos", "row")
QUERY_COLUMNS = ("query_id", "entity_id", "as_of_ms")
VALUES = "values"
_NO_KEY = "unknown"  # the reference's key for a None group or currency value


# ---- normalisation (Python, shared with the other executors) ------------------------------

def _event_type(dtype: pa.DataType) -> pa.DataType:
    """How a contract column is held in events: as the normalised row holds it."""
    if pa.types.is_timestamp(dtype) or pa.types.is_integer(dtype):
        return pa.int64()  # the row has epoch-ms ints
    if pa.types.is_floating(dtype):
        return pa.float64()  # a Python float; float32 would lose digits
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _event_type(f.type)) for f in dtype])
    if pa.types.is_map(dtype):
        return pa.map_(dtype.key_type, _event_type(dtype.item_type))
    if pa.types.is_list(dtype):
        return pa.list_(_event_type(dtype.value_type))
    return dtype


def row_schema(feature_set: FeatureSet) -> pa.StructType:
    """The ``row`` struct type of a set's events frame."""
    from mercury.lake.tables import arrow_schema

    source = feature_set.source
    schema = arrow_schema(registry.stream(source.stream).schema_subject)
    if source.envelope == "debezium":
        columns = {f.name: f.type for f in schema.field("after").type}
    else:
        columns = {f.name: f.type for f in schema}
    derived = {d.name for d in source.derived}
    fields = []
    for name in used_columns(feature_set):
        dtype = pa.string() if name in derived else _event_type(columns[name])
        fields.append(pa.field(name, dtype))
    return pa.struct(fields)


def events_table(feature_set: FeatureSet, records: Iterable[dict[str, Any]]) -> pa.Table:
    """The events of valid ``records`` (in arrival order) as Arrow, in ``EVENT_COLUMNS``."""
    return events_table_of(feature_set, _normalised(feature_set, records))


def _normalised(feature_set: FeatureSet,
                records: Iterable[dict[str, Any]]) -> list[FeatureEvent]:
    events = []
    for record in records:
        event = normalise(feature_set, record)
        if event is not None:
            events.append(event)
    return events


def events_table_of(feature_set: FeatureSet, events: Sequence[FeatureEvent]) -> pa.Table:
    """Already normalised events (in arrival order) as Arrow, in ``EVENT_COLUMNS``."""
    row_type = row_schema(feature_set)
    order_num, order_tie = [], []
    for event in events:
        order = event.order
        if not 1 <= len(order) <= 2 or not isinstance(order[0], int) or \
                (len(order) == 2 and not isinstance(order[1], str)):
            raise TypeError(f"{feature_set.ref}: event order {order!r} is not (int[, str])")
        order_num.append(order[0])
        order_tie.append(order[1] if len(order) == 2 else "")
    rows = [pa.array([e.row.get(f.name) for e in events], type=f.type) for f in row_type]
    row = pa.StructArray.from_arrays(rows, fields=list(row_type)) if rows else \
        pa.array([{}] * len(events), type=row_type)
    return pa.table({
        "entity_id": pa.array([e.entity_id for e in events], pa.string()),
        "event_id": pa.array([e.event_id for e in events], pa.string()),
        "event_ts": pa.array([e.event_ts for e in events], pa.int64()),
        "arrival_ts": pa.array([e.arrival_ts for e in events], pa.int64()),
        "order_num": pa.array(order_num, pa.int64()),
        "order_tie": pa.array(order_tie, pa.string()),
        "deleted": pa.array([e.deleted for e in events], pa.bool_()),
        "log_pos": pa.array(range(len(events)), pa.int64()),
        "row": row,
    })


def events_frame(spark: SparkSession, feature_set: FeatureSet,
                 records_in_arrival_order: Iterable[dict[str, Any]]) -> DataFrame:
    """The Spark events frame of valid records of the set's source, in arrival order."""
    return spark.createDataFrame(events_table(feature_set, records_in_arrival_order))


def lake_records(settings: Settings, stream: str, snapshot_id: int | None = None,
                 row_filter: str | BooleanExpression | None = None) -> list[dict[str, Any]]:
    """The stream's lake table (current, or as of ``snapshot_id``; optionally filtered) as
    records, in arrival order (``ingest_ts``, table order on a tie or where the stream has
    none); times as epoch ms, as on the stream. The lake already keeps one row per event id,
    its first arrival."""
    from mercury.lake import tables

    table = tables.read(settings, stream, row_filter=row_filter, snapshot_id=snapshot_id)
    if tables.ARRIVAL_FIELD in table.column_names:
        table = table.take(pc.sort_indices(
            pa.table({"a": table[tables.ARRIVAL_FIELD],
                      "p": pa.array(range(table.num_rows), pa.int64())}),
            sort_keys=[("a", "ascending"), ("p", "ascending")]))
    records: list[dict[str, Any]] = _epoch_ms(table).to_pylist()
    return records


def _epoch_ms(table: pa.Table) -> pa.Table:
    """Timestamps, at any depth, as epoch-millisecond int64."""
    def swap_timestamps(dtype: pa.DataType,
                        to: Callable[[pa.DataType], pa.DataType]) -> pa.DataType:
        if pa.types.is_timestamp(dtype):
            return to(dtype)
        if pa.types.is_struct(dtype):
            return pa.struct([f.with_type(swap_timestamps(f.type, to)) for f in dtype])
        if pa.types.is_list(dtype):
            return pa.list_(dtype.value_field.with_type(swap_timestamps(dtype.value_type, to)))
        if pa.types.is_map(dtype):
            return pa.map_(dtype.key_field,
                           dtype.item_field.with_type(swap_timestamps(dtype.item_type, to)))
        return dtype

    def schema(to: Callable[[pa.DataType], pa.DataType]) -> pa.Schema:
        return pa.schema([f.with_type(swap_timestamps(f.type, to)) for f in table.schema])

    # Casting a timestamp to int64 gives its count in its own unit: go to ms first.
    as_ms = schema(lambda t: pa.timestamp("ms", tz=t.tz))
    return table.cast(as_ms).cast(schema(lambda _t: pa.int64()))


def lake_events_frame(spark: SparkSession, settings: Settings,
                      feature_set: FeatureSet) -> DataFrame:
    """The events frame of the set's source read from its lake table."""
    return events_frame(spark, feature_set, lake_records(settings, feature_set.source.stream))


# ---- the transform (Spark) -------------------------------------------------------------------

def window_first_ms(spec: Window, as_of: Column) -> Column:
    """The start of the oldest tile ``spec`` covers as of ``as_of``: ``first_tile * hop``."""
    from pyspark.sql import functions as F

    tile_start = as_of - F.pmod(as_of, F.lit(spec.hop_ms))
    return tile_start - F.lit(spec.length_ms - spec.hop_ms)


def point_in_time(feature_set: FeatureSet, events_df: DataFrame,
                  queries_df: DataFrame) -> DataFrame:
    """``query_id, entity_id, as_of_ms, values`` per query (see the module doc)."""
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    queries = queries_df.select(
        F.col("query_id").alias("_q"), F.col("entity_id").cast("string").alias("_entity"),
        F.col("as_of_ms").cast("long").alias("_as_of"))
    first = (events_df
             .withColumn("_n", F.row_number().over(W.partitionBy("event_id").orderBy("log_pos")))
             .where(F.col("_n") == 1).drop("_n"))
    counted = (queries.join(first, F.col("_entity") == F.col("entity_id"))
               .where((F.col("arrival_ts") <= F.col("_as_of"))
                      & (F.col("event_ts") <= F.col("_as_of"))
                      & (F.col("event_ts") >= F.col("arrival_ts") - F.lit(MAX_LATENESS_MS))))
    row_struct = cast("StructType", events_df.schema["row"].dataType)
    row_types = {f.name: f.dataType for f in row_struct.fields}

    parts = [counted.groupBy("_q").agg(F.lit(True).alias("_present"))]
    columns: dict[str, Column] = {}
    aggregates = [f for f in feature_set.features if isinstance(f, Aggregate)]
    if aggregates:
        frame, aggregate_values = _aggregates(feature_set, aggregates, counted, row_types)
        parts.append(frame)
        columns.update(aggregate_values)
    for feature in feature_set.features:
        if isinstance(feature, LastN):
            parts.append(_last_n(feature, counted))
            columns[feature.name] = F.coalesce(F.col(feature.name), F.array())
        elif isinstance(feature, Latest):
            parts.append(_latest(feature, counted))
            columns[feature.name] = F.col(feature.name) if feature.per is None else \
                F.coalesce(F.col(feature.name), F.create_map())

    out = queries
    for part in parts:
        out = out.join(part, "_q", "left")
    values = F.struct(*(columns[f.name].alias(f.name) for f in feature_set.features))
    return out.select(
        F.col("_q").alias("query_id"), F.col("_entity").alias("entity_id"),
        F.col("_as_of").alias("as_of_ms"),
        F.when(F.col("_present"), F.to_json(values, {"ignoreNullFields": "false"}))
        .alias(VALUES))


def _row(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col("row").getField(name)


def _passes(where: Sequence[Filter]) -> Column:
    """The AND of the filters, with Python's semantics for None (``None != x`` is true)."""
    from pyspark.sql import functions as F

    condition = F.lit(True)
    for f in where:
        value = _row(f.column)
        if f.op == "not_null":
            test = value.isNotNull()
        elif f.op == "is_null":
            test = value.isNull()
        elif f.op in ("eq", "ne"):
            test = value.isNull() if f.value is None else \
                (value.isNotNull() & (value == F.lit(f.value)))
            if f.op == "ne":
                test = ~test
        else:  # in, not_in
            values = cast("tuple[object, ...]", f.value)  # the DSL makes it a tuple
            present = [v for v in values if v is not None]
            test = value.isNotNull() & value.isin(present) if present else F.lit(False)
            if None in values:
                test = test | value.isNull()
            if f.op == "not_in":
                test = ~test
        condition = condition & test
    return condition


def _key(value: Column, dtype: DataType) -> Column:
    """``str(value)`` as the reference spells a group or currency key; None -> "unknown"."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    if isinstance(dtype, BooleanType):
        text = F.when(value, F.lit("True")).otherwise(F.lit("False"))
    else:
        text = value.cast("string")
    return F.when(value.isNull(), F.lit(_NO_KEY)).otherwise(text)


def _integral(dtype: DataType) -> bool:
    from pyspark.sql.types import ByteType, IntegerType, LongType, ShortType

    return isinstance(dtype, ByteType | ShortType | IntegerType | LongType)


def _aggregates(feature_set: FeatureSet, features: list[Aggregate], counted: DataFrame,
                row_types: dict[str, DataType]) -> tuple[DataFrame, dict[str, Column]]:
    """One frame keyed by ``_q`` with a column per (feature, window), and the final value
    column of each feature over it."""
    from pyspark.sql import functions as F

    source = feature_set.source
    as_of = F.col("_as_of")
    # Each distinct condition, key and value is computed once per row, then referenced by the
    # (feature, window) entries: features share filters, windows and keys.
    shared: dict[tuple[Any, ...], tuple[str, Column]] = {}

    # ``make`` is called with no argument (the lambdas below bind loop values as defaults).
    def once(key: tuple[Any, ...], make: Callable[..., Column]) -> Column:
        if key not in shared:
            shared[key] = (f"_x{len(shared)}", make())
        return F.col(shared[key][0])

    def null(kind: str) -> Column:
        return F.lit(None).cast(kind)

    # Step 1: per event row, one entry per (feature, window) it counts in: a struct naming the
    # feature (f), the window (w), its group (g) and currency (c) keys and the value to fold,
    # typed long or double (l / d) so integer sums stay exact, or as a string (s) for distinct
    # counts. Rows outside a window or failing a filter give null entries, dropped below.
    entries: list[Column] = []
    leaf_is_long: dict[int, bool] = {}
    leaf_of: dict[int, Column] = {}
    for fid, f in enumerate(features):
        value = _row(f.column) if f.column else None
        dtype = row_types[f.column] if f.column else None
        long_input = dtype is not None and _integral(dtype)

        def contributing(f: Aggregate = f, value: Column | None = value) -> Column:
            passing = _passes(f.where)
            return passing if value is None else passing & value.isNotNull()

        contributes = once(("where", f.where, f.column), contributing)
        group = once(("key", f.group_by), lambda f=f: _key(
            _row(f.group_by), row_types[f.group_by])) if f.group_by else null("string")
        currency_column = source.currency_of(f.column) if f.column else None
        currency = once(("key", currency_column), lambda c=currency_column: _key(
            _row(c), row_types[c])) if currency_column else null("string")
        if f.op == "distinct_count":
            # -0.0 + 0.0 is 0.0: Python's set holds 0.0 and -0.0 once, so must we.
            floating = not long_input and \
                cast("DataType", dtype).typeName() in ("double", "float")  # it has a column
            distinct = once(("distinct", f.column), lambda v=value, fl=floating: (
                (v + F.lit(0.0)) if fl else v).cast("string"))
        else:
            distinct = null("string")
        numeric = value is not None and f.op in ("sum", "avg", "min", "max")
        number_l = once(("long", f.column), lambda v=value: v.cast("long")) \
            if numeric and long_input else null("long")
        number_d = once(("double", f.column), lambda v=value: v.cast("double")) \
            if numeric and not long_input else null("double")
        for wid, text in enumerate(f.windows):
            spec = window(text)
            inside = once(("window", spec), lambda spec=spec: F.col("event_ts")
                          >= window_first_ms(spec, as_of))
            entries.append(F.when(contributes & inside, F.struct(
                F.lit(fid).alias("f"), F.lit(wid).alias("w"), group.alias("g"),
                currency.alias("c"), number_l.alias("l"), number_d.alias("d"),
                distinct.alias("s"))))
        leaf_is_long[fid] = f.op in ("count", "distinct_count") or \
            (f.op in ("min", "max") and long_input)
        leaf_of[fid] = _leaf(f.op, long_input)

    # Step 2: explode the entries and aggregate each (query, feature, window, group, currency)
    # bucket once; only the statistics some feature needs are computed.
    prepared = counted.select("_q", *(column.alias(name) for name, column in shared.values()))
    exploded = (prepared.select("_q", F.explode(F.filter(F.array(*entries),
                                                           lambda e: e.isNotNull())).alias("e"))
                .select("_q", "e.*"))
    ops = {f.op for f in features}
    stats = [F.count(F.lit(1)).alias("n")]
    if ops & {"sum", "avg"}:
        stats += [F.sum("l").alias("sl"), F.sum("d").alias("sd")]
    if "min" in ops:
        stats += [F.min("l").alias("minl"), F.min("d").alias("mind")]
    if "max" in ops:
        stats += [F.max("l").alias("maxl"), F.max("d").alias("maxd")]
    if "distinct_count" in ops:
        stats.append(F.count_distinct("s").alias("nd"))
    buckets = exploded.groupBy("_q", "f", "w", "g", "c").agg(*stats)

    def by_feature(wanted_long: bool, cast: str) -> Column:
        expression = None
        for fid, leaf in leaf_of.items():
            if leaf_is_long[fid] != wanted_long:
                continue
            expression = (F.when(F.col("f") == fid, leaf) if expression is None
                          else expression.when(F.col("f") == fid, leaf))
        return (expression if expression is not None else F.lit(None)).cast(cast)

    # Step 3: each bucket's final value (a sum, an average, a count ...), then the buckets of
    # one (feature, window, group) folded into a currency map (money is never summed across
    # currencies) or a single value.
    leaves = buckets.select("_q", "f", "w", "g", "c", by_feature(True, "long").alias("leaf_l"),
                            by_feature(False, "double").alias("leaf_d"))
    by_currency = leaves.groupBy("_q", "f", "w", "g").agg(
        F.first(F.when(F.col("c").isNull(), F.col("leaf_l")), ignorenulls=True).alias("one_l"),
        F.first(F.when(F.col("c").isNull(), F.col("leaf_d")), ignorenulls=True).alias("one_d"),
        F.map_from_entries(F.collect_list(F.when(
            F.col("c").isNotNull() & F.col("leaf_l").isNotNull(),
            F.struct("c", "leaf_l")))).alias("map_l"),
        F.map_from_entries(F.collect_list(F.when(
            F.col("c").isNotNull() & F.col("leaf_d").isNotNull(),
            F.struct("c", "leaf_d")))).alias("map_d"))

    # Step 4: one column per (feature, window), nested by group where the feature has one;
    # a window with no events gets the value the reference gives an empty window (0 for
    # counts and sums, {} for maps, null for min/max/avg), never a missing key.
    cells = []
    values: dict[str, Column] = {}
    for fid, f in enumerate(features):
        suffix = "l" if leaf_is_long[fid] else "d"
        keyed_currency = f.column is not None and source.currency_of(f.column) is not None
        windows = []
        for wid, text in enumerate(f.windows):
            name = f"_a{fid}_{wid}"
            here = (F.col("f") == fid) & (F.col("w") == wid)
            inner = F.col(f"map_{suffix}") if keyed_currency else F.col(f"one_{suffix}")
            if f.group_by is not None:
                cells.append(F.map_from_entries(F.collect_list(
                    F.when(here, F.struct(F.col("g"), inner)))).alias(name))
            else:
                cells.append(F.first(F.when(here, inner), ignorenulls=True).alias(name))
            if f.group_by is not None or keyed_currency:
                empty = F.create_map()
            elif f.op in ("count", "distinct_count"):
                empty = F.lit(0).cast("long")
            elif f.op == "sum":
                empty = F.lit(0.0)
            else:
                empty = F.lit(None)
            windows.append(F.coalesce(F.col(name), empty).alias(spec_label(text)))
        values[f.name] = F.struct(*windows)
    return by_currency.groupBy("_q").agg(*cells), values


def spec_label(text: str) -> str:
    return window(text).label


def _leaf(op: str, long_input: bool) -> Column:
    """A bucket's value from its statistics (see ``_aggregates``)."""
    from pyspark.sql import functions as F

    suffix = "l" if long_input else "d"
    if op == "count":
        return F.col("n")
    if op == "sum":
        return F.col(f"s{suffix}").cast("double")
    if op == "avg":
        return F.col(f"s{suffix}").cast("double") / F.col("n")
    if op == "min":
        return F.col(f"min{suffix}")
    if op == "max":
        return F.col(f"max{suffix}")
    return F.col("nd")  # distinct_count


def _last_n(feature: LastN, counted: DataFrame) -> DataFrame:
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    ranks = F.lit(0)
    for status, rank in feature.status_rank:
        ranks = F.when(_row(feature.status) == F.lit(status), F.lit(rank)).otherwise(ranks)
    strength = F.struct(ranks.alias("rank"), F.col("event_ts"), F.col("event_id"))
    events = counted.where(_passes(feature.where) & _row(feature.item_key).isNotNull())
    picked = [F.max_by(_row(feature.status), strength).alias("status")]
    for name in feature.fields:
        having = F.when(_row(name).isNotNull(), strength)
        picked.append(F.max_by(_row(name), having).alias(name))
    items = (events.groupBy("_q", _row(feature.item_key).alias("item"))
             .agg(F.min("event_ts").alias("ts"), *picked))
    newest = W.partitionBy("_q").orderBy(F.col("ts").desc(), F.col("item").desc())
    top = items.withColumn("_k", F.row_number().over(newest)).where(F.col("_k") <= feature.n)
    entry = F.struct(F.col("_k").alias("k"), F.struct(
        "item", "ts", "status", *feature.fields).alias("v"))
    ordered = F.array_sort(F.collect_list(entry), lambda a, b: (a.k - b.k).cast("int"))
    return top.groupBy("_q").agg(F.transform(ordered, lambda e: e.v).alias(feature.name))


def _latest(feature: Latest, counted: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    events = counted.where(_passes(feature.where))
    keys = ["_q"]
    if feature.per is not None:
        per = _row(feature.per)
        events = events.where(per.isNotNull()).withColumn("_per", per.cast("string"))
        keys.append("_per")
    expires = _row(feature.expires) if feature.expires else F.lit(None).cast("long")
    payload = F.struct(F.col("deleted"), F.col("event_ts"), expires.alias("_expires"),
                       *(_row(name).alias(name) for name in feature.fields))
    # Greatest order; on a tie the first arrival, as Python's max keeps the first maximum.
    order = F.struct(F.col("order_num"), F.col("order_tie"), (-F.col("log_pos")).alias("p"))
    newest = events.groupBy(*keys, "_as_of").agg(F.max_by(payload, order).alias("_n"))
    hidden = F.col("_n.deleted") | (F.col("_n._expires").isNotNull()
                                    & (F.col("_n._expires") <= F.col("_as_of")))
    if feature.max_age is not None:
        hidden = hidden | (F.col("_as_of") - F.col("_n.event_ts")
                           > F.lit(parse_duration(feature.max_age)))
    value = F.when(~hidden, F.struct(*(F.col(f"_n.{name}").alias(name) for name in feature.fields),
                                     F.col("_n.event_ts").alias("ts")))
    if feature.per is None:
        return newest.select("_q", value.alias(feature.name))
    return (newest.select("_q", "_per", value.alias("_v"))
            .groupBy("_q").agg(F.map_from_entries(F.collect_list(F.when(
                F.col("_v").isNotNull(), F.struct("_per", "_v")))).alias(feature.name)))


# ---- reading results and holding them to the reference -----------------------------------

def decode_values(text: str | None) -> dict[str, Any] | None:
    """A ``values`` cell as the reference's ``{feature: value}``; None for an absent entity."""
    values: dict[str, Any] | None = None if text is None else orjson.loads(text)
    return values


def reference_for(feature_set: FeatureSet, events: Sequence[FeatureEvent],
                  queries: Iterable[tuple[object, str, int]]
                  ) -> dict[object, dict[str, object] | None]:
    """``{query_id: values_for(...).get(entity)}``: the oracle per query, computed on the
    entity's events only (after the global first-arrival dedup, which is what ``values_for``
    does first, so the answer is the same)."""
    by_entity: dict[str, list[FeatureEvent]] = defaultdict(list)
    for event in first_arrivals(events):
        by_entity[event.entity_id].append(event)
    return {query_id: values_for(feature_set, by_entity.get(entity_id, []),
                                 as_of).get(entity_id)
            for query_id, entity_id, as_of in queries}


class ResultRow(Protocol):
    """A row of ``point_in_time``'s frame (a pyspark ``Row``, or a dict)."""

    def __getitem__(self, name: str) -> Any: ...


def compare(feature_set: FeatureSet, events: Sequence[FeatureEvent],
            rows: Iterable[ResultRow]) -> Report:
    """Spark's rows (``query_id, entity_id, as_of_ms, values``) against the reference, value
    by value with ``consistency.same``; an absent entity must be absent on both sides."""
    cells = [(r["query_id"], r["entity_id"], r["as_of_ms"], r[VALUES]) for r in rows]
    expected = reference_for(feature_set, events, [(q, e, t) for q, e, t, _ in cells])
    report = Report()
    for query_id, entity_id, as_of, text in cells:
        got, want = decode_values(text), expected[query_id]
        report.entities += 1
        where = f"as_of={as_of} {feature_set.ref} {entity_id} (query {query_id})"
        if got is None or want is None:
            report.values += 1
            if got is not want:
                report.mismatches.append(f"{where}: spark={got!r} reference={want!r}")
            continue
        for name, value in want.items():
            report.values += 1
            if name not in got or not same(got[name], value):
                report.mismatches.append(
                    f"{where} {name}: spark={got.get(name)!r} reference={value!r}")
        for name in sorted(set(got) - set(want)):
            report.mismatches.append(f"{where} {name}: spark has it, the reference does not")
    return report

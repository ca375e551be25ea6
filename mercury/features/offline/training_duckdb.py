"""Point-in-time training sets on DuckDB: the same rows as ``training.training_set``, on one
machine, from Arrow tables, with no JVM.

Design notes: docs/BATCH.md, "Training sets on DuckDB". Spark stays the distributed path
(EMR); ``engine.choose`` picks between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, cast

import pyarrow as pa
import pyarrow.compute as pc

from mercury.features.offline.training import (
    ENTITY_COLUMN,
    ROW_ID,
    TIMESTAMP_COLUMN,
    check_events_given,
    check_label_columns,
    feature_column,
    resolve,
)

if TYPE_CHECKING:
    import duckdb

    from mercury.config import Settings
    from mercury.features.definition.dsl import FeatureSet


def timestamp_sql(labels: pa.Table, timestamp_column: str) -> str:
    """The label time as epoch ms in SQL; only integer types and timestamps."""
    dtype = labels.schema.field(timestamp_column).type
    quoted = '"' + timestamp_column.replace('"', '""') + '"'
    if pa.types.is_integer(dtype):
        return f"CAST({quoted} AS BIGINT)"
    if pa.types.is_timestamp(dtype):
        return f"epoch_ms({quoted})"
    raise ValueError(f"labels: column {timestamp_column!r} is {dtype}; it must be epoch "
                     "milliseconds (an integer type) or a timestamp")


def check_nulls(labels: pa.Table, timestamp_column: str) -> None:
    """Every label row needs an entity and a time."""
    for name in (timestamp_column, ENTITY_COLUMN):
        count = labels[name].null_count
        if count:
            example = labels.filter(pc.is_null(labels[name])).slice(0, 1).to_pylist()[0]
            raise ValueError(f"labels: {count} row(s) have a null {name!r}; every label row "
                             f"needs an entity and a time, e.g. {example}")


Events: TypeAlias = "pa.Table | str | Path"
"""A set's events: an Arrow table, or a Parquet file (or glob) DuckDB reads itself, only the
columns the query needs (both in ``spark.executor.EVENT_COLUMNS``)."""


def events_of(settings: Settings | None, feature_set: FeatureSet,
              events: Mapping[str, Events] | None) -> Events:
    """The set's events: given, or read from its lake table."""
    if events is not None:
        return events[feature_set.ref]
    from mercury.features.executors.spark.executor import events_table, lake_records

    return events_table(feature_set, lake_records(cast("Settings", settings),
                                                  feature_set.source.stream))


def _schema(events: Events) -> pa.Schema:
    if isinstance(events, pa.Table):
        return events.schema
    import pyarrow.dataset as ds

    return ds.dataset(str(events), format="parquet").schema


def training_query(feature_sets: Sequence[FeatureSet], event_tables: Sequence[Events],
                   labels: pa.Table, timestamp_column: str = TIMESTAMP_COLUMN) -> str:
    """The SQL that builds the set (readable: print it to see how a value is made)."""
    from mercury.features.executors.duck.sql import training_sql

    columns = [feature_column(fs, f.name) for fs in feature_sets for f in fs.features]
    row_types = [cast("pa.StructType", _schema(t).field("row").type) for t in event_tables]
    return training_sql(feature_sets, row_types, timestamp_sql(labels, timestamp_column),
                        ROW_ID, columns)


def training_table(settings: Settings | None, labels: pa.Table,
                   feature_set_refs: Sequence[str], *,
                   events: Mapping[str, Events] | None = None,
                   timestamp_column: str = TIMESTAMP_COLUMN,
                   connection: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """The label rows, in their order, with every feature of ``feature_set_refs`` as of each
    row's time: the columns, values and refusals of ``training.training_set``, as Arrow.

    ``events`` maps a set's ref to its events (``Events``); without it they come from the
    lake (needs ``settings``). ``connection`` lets a caller
    keep one DuckDB across builds.
    """
    import duckdb

    feature_sets = resolve(feature_set_refs)
    check_events_given(feature_sets, events, settings)
    check_label_columns(labels.column_names, timestamp_column, feature_sets)
    timestamp_sql(labels, timestamp_column)  # the type rule, before reading any event
    check_nulls(labels, timestamp_column)
    tables = [events_of(settings, fs, events) for fs in feature_sets]
    sql = training_query(feature_sets, tables, labels, timestamp_column)
    con = connection or duckdb.connect()
    try:
        con.register("labels", labels.append_column(
            ROW_ID, pa.array(range(labels.num_rows), pa.int64())))
        for i, table in enumerate(tables):
            if isinstance(table, pa.Table):
                con.register(f"events_{i}", table)
            else:
                con.read_parquet(str(table)).create_view(f"events_{i}")
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister("labels")
        for i in range(len(tables)):
            con.execute(f"DROP VIEW IF EXISTS events_{i}")
        if connection is None:
            con.close()

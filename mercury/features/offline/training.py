"""Point-in-time training sets: each label row gets the feature values as of its own time.

Design notes: docs/BATCH.md, "Training sets in detail".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

from mercury.features.definition.dsl import FeatureSet

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mercury.config import Settings

ENTITY_COLUMN = "entity_id"
TIMESTAMP_COLUMN = "label_ts"
ROW_ID = "__mercury_label_row"  # the internal row id; never shown
_REF = re.compile(r"^[a-z][a-z0-9_]*\.v[0-9]+(:[a-z][a-z0-9_]*)?$")


def feature_column(feature_set: FeatureSet, feature_name: str) -> str:
    """The output column of one feature: ``<set>__<feature>``."""
    return f"{feature_set.name}__{feature_name}"


def resolve(feature_set_refs: Sequence[str]) -> list[FeatureSet]:
    """The compiled sets, in the order asked; an unknown or malformed ref is a ValueError.

    A ref is ``<set>.v<version>`` (every feature of the set) or ``<set>.v<version>:<feature>``
    (that feature only, as Feast's ``view:feature``); several of one set are merged into one
    set of the features asked, in the set's order, so its events are read once.
    """
    from dataclasses import replace

    from mercury.features.definition.compile import CompileError, load_compiled

    refs = list(feature_set_refs)
    if not refs:
        raise ValueError("training_set: no feature sets asked for (refs like 'spending.v1')")
    bad = [r for r in refs if not isinstance(r, str) or not _REF.match(r)]
    if bad:
        raise ValueError(f"training_set: {bad!r} are not feature set refs "
                         "'<name>.v<version>[:<feature>]'")
    if len(set(refs)) != len(refs):
        raise ValueError(f"training_set: a feature set is asked for twice in {refs!r}")
    wanted: dict[str, set[str] | None] = {}
    for ref in refs:
        set_ref, _, feature = ref.partition(":")
        if set_ref in wanted and (wanted[set_ref] is None or not feature):
            raise ValueError(f"training_set: {set_ref} is asked for whole and by feature")
        # Never None here with a feature: that was refused just above.
        wanted[set_ref] = cast("set[str]", wanted.get(set_ref, set())) | {feature} \
            if feature else None
    try:
        loaded = {fs.ref: fs for fs in load_compiled(list(wanted))}
    except CompileError as exc:
        raise ValueError(f"training_set: unknown feature set: {exc}") from None
    sets = []
    for set_ref, features in wanted.items():
        fs = loaded[set_ref]
        if features is not None:
            unknown = features - {f.name for f in fs.features}
            if unknown:
                raise ValueError(f"training_set: {set_ref} has no feature {sorted(unknown)}; "
                                 f"it has {[f.name for f in fs.features]}")
            fs = replace(fs, features=tuple(f for f in fs.features if f.name in features))
        sets.append(fs)
    return sets


def epoch_ms(labels: DataFrame, timestamp_column: str):
    """The label timestamp as an epoch-ms long Column; only integer types and timestamps."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, LongType, TimestampType

    dtype = labels.schema[timestamp_column].dataType
    column = F.col(timestamp_column)
    if isinstance(dtype, LongType | IntegerType):
        return column.cast("long")
    if isinstance(dtype, TimestampType):
        return F.unix_millis(column)
    raise ValueError(f"labels: column {timestamp_column!r} is {dtype.simpleString()}; it must "
                     "be epoch milliseconds (an integer type) or a Spark timestamp")


def check_labels(labels: DataFrame, timestamp_column: str,
                 feature_sets: Sequence[FeatureSet]) -> None:
    """The schema rules (no Spark job): columns present and typed, names free."""
    check_label_columns(labels.columns, timestamp_column, feature_sets)
    epoch_ms(labels, timestamp_column)  # the type rule, before any job


def check_label_columns(columns: Sequence[str], timestamp_column: str,
                        feature_sets: Sequence[FeatureSet]) -> None:
    """The column rules every engine shares: entity and time present, feature names free."""
    columns = list(columns)
    for name, role in ((ENTITY_COLUMN, "the entity"), (timestamp_column, "the label time")):
        if name not in columns:
            raise ValueError(f"labels: no column {name!r} ({role}); columns are {columns}")
    if ROW_ID in columns:
        raise ValueError(f"labels: column {ROW_ID!r} is reserved for the internal row id")
    for fs in feature_sets:
        for feature in fs.features:
            taken = feature_column(fs, feature.name)
            if taken in columns:
                raise ValueError(f"labels: column {taken!r} would be overwritten by the "
                                 f"feature {feature.name} of {fs.ref}; rename it")


def check_nulls(labels: DataFrame, timestamp_column: str) -> None:
    """One pass: every label row needs an entity and a time."""
    from pyspark.sql import functions as F

    as_ms = epoch_ms(labels, timestamp_column)
    (nulls,) = labels.agg(
        F.sum(F.when(as_ms.isNull(), 1).otherwise(0)).alias("ts"),
        F.sum(F.when(F.col(ENTITY_COLUMN).isNull(), 1).otherwise(0)).alias("entity"),
    ).collect()
    for name, count in ((timestamp_column, nulls["ts"]), (ENTITY_COLUMN, nulls["entity"])):
        if count:
            example = labels.where(F.col(name).isNull()).limit(1).drop(ROW_ID).collect()[0]
            raise ValueError(f"labels: {count} row(s) have a null {name!r}; every label row "
                             f"needs an entity and a time, e.g. {example.asDict()}")


def check_events_given(feature_sets: Sequence[FeatureSet], events: Mapping[str, object] | None,
                       settings: Settings | None) -> None:
    """Events for every set, or settings to read them from the lake."""
    if events is not None:
        missing = [fs.ref for fs in feature_sets if fs.ref not in events]
        if missing:
            raise ValueError(f"training_set: events given for {sorted(events)}, not {missing}")
    elif settings is None:
        raise ValueError("training_set: settings are needed to read events from the lake")


def training_set(spark: SparkSession, settings: Settings | None, labels: DataFrame,
                 feature_set_refs: Sequence[str], *,
                 events: Mapping[str, DataFrame] | None = None,
                 timestamp_column: str = TIMESTAMP_COLUMN) -> DataFrame:
    """The label rows with every feature of ``feature_set_refs`` as of each row's timestamp.

    A ref may pick one feature, ``"engagement.v1:card_lock"`` (see ``resolve``).
    ``events`` maps a set's ref (``"engagement.v1"``) to its events frame
    (``spark_executor.EVENT_COLUMNS``); without it each set's events come from its lake table
    (``lake_events_frame``, needs ``settings``).
    The result is lazy apart from the label checks; its rows come in the labels' order.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType, StringType

    from mercury.features.executors.spark.executor import VALUES, lake_events_frame, point_in_time

    feature_sets = resolve(feature_set_refs)
    check_events_given(feature_sets, events, settings)
    check_labels(labels, timestamp_column, feature_sets)

    # The id is fixed once (a local checkpoint) so that the queries and the final join see the
    # same numbering even if the labels' source would be read again.
    rows = labels.withColumn(ROW_ID, F.monotonically_increasing_id()).localCheckpoint()
    check_nulls(rows, timestamp_column)  # on the checkpoint: the labels are read once
    queries = rows.select(F.col(ROW_ID).alias("query_id"),
                          F.col(ENTITY_COLUMN).cast("string").alias("entity_id"),
                          epoch_ms(rows, timestamp_column).alias("as_of_ms"))
    out = rows
    as_text = MapType(StringType(), StringType())  # a nested JSON value parses to its text
    for fs in feature_sets:
        frame = events[fs.ref] if events is not None else \
            lake_events_frame(spark, cast("Settings", settings), fs)  # given: checked above
        values = point_in_time(fs, frame, queries)
        parsed = F.from_json(F.col(VALUES), as_text)
        out = out.join(values.select(
            F.col("query_id").alias(ROW_ID),
            *(parsed.getItem(f.name).alias(feature_column(fs, f.name)) for f in fs.features)),
            ROW_ID, "left")
    return out.orderBy(ROW_ID).drop(ROW_ID)

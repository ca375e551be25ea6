"""Warm start: a new version of a feature set filled from the lake, taken over exactly by the
streaming job at an arrival cut.

Design notes: docs/BATCH.md, "Warm start in detail".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import orjson
import pyarrow as pa

from mercury.durations import parse_duration
from mercury.features.definition.semantics import MAX_LATENESS_MS
from mercury.features.executors.events import FeatureEvent
from mercury.features.executors.streaming import incremental
from mercury.features.executors.streaming.executor import Seam
from mercury.online import layout
from mercury.online.store import OnlineStore

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

    from mercury.config import Settings

WRITE_BATCH = 500  # entities per pipelined round trip
_FOLDED = "entity_id string, state binary, events long"


class LakeBehind(RuntimeError):
    """The lake does not yet hold every arrival up to the cut."""


class WarmStartMissing(RuntimeError):
    """A seam was asked for a version with no (or an expired) warm start in the store."""


@dataclass(frozen=True)
class WarmStartResult:
    feature_set: str      # the set ref, e.g. spending.v2
    cut_ms: int
    entities: int         # entities with a counted event by the cut (hashes written)
    events: int           # events folded
    lake_newest_ms: int   # newest arrival the lake holds
    seconds: float

    def summary(self) -> str:
        return (f"{self.feature_set}: {self.entities} entities, {self.events} events folded "
                f"up to arrival {self.cut_ms} (lake at {self.lake_newest_ms}) "
                f"in {self.seconds:.1f} s")


def bootstrap_key(feature_set, entity_id: str) -> str:
    """Beside the entity's hash, in its hash tag (same cluster slot)."""
    return layout.entity_key(feature_set, entity_id) + ":boot"


def marker_key(feature_set) -> str:
    return f"fs:{{warm}}:{feature_set.name}:v{feature_set.version}"


def state_ttl_ms(settings: Settings, feature_set) -> int:
    return max(parse_duration(feature_set.ttl), settings.offline.warm_start_state_ttl_s * 1000)


# ---- the fold (runs in Spark's Python workers) ----------------------------------------------

def _event(feature_set, row: dict) -> FeatureEvent:
    """An events-frame row back into the event ``events.normalise`` made."""
    order = (row["order_num"],) if feature_set.source.envelope == "debezium" else \
        (row["order_num"], row["order_tie"])
    return FeatureEvent(entity_id=row["entity_id"], event_id=row["event_id"],
                        event_ts=row["event_ts"], arrival_ts=row["arrival_ts"], order=order,
                        row=row["row"], deleted=row["deleted"])


def fold_batches(feature_set) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """For ``mapInArrow`` over events sorted by (entity, arrival): one state per entity."""

    def fold(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        entity, state, count = None, None, 0
        out: dict[str, list] = {"entity_id": [], "state": [], "events": []}

        def flush():
            if entity is not None:
                out["entity_id"].append(entity)
                out["state"].append(incremental.encode_state(state))
                out["events"].append(count)

        for batch in batches:
            for row in batch.to_pylist():
                if row["entity_id"] != entity:
                    flush()
                    entity, state, count = row["entity_id"], incremental.new_state(), 0
                # ``state`` is this entity's: set when its first row came.
                incremental.apply(feature_set, cast(incremental.SetState, state),
                                  _event(feature_set, row))
                count += 1
            if len(out["entity_id"]) >= WRITE_BATCH:
                yield pa.RecordBatch.from_pydict(out, schema=_schema())
                out = {"entity_id": [], "state": [], "events": []}
        flush()
        if out["entity_id"]:
            yield pa.RecordBatch.from_pydict(out, schema=_schema())

    return fold


def _schema() -> pa.Schema:
    return pa.schema([("entity_id", pa.string()), ("state", pa.binary()),
                      ("events", pa.int64())])


def fold_states(feature_set, events_df: DataFrame, cut_ms: int) -> DataFrame:
    """``entity_id, state, events``: each entity's state from its events arrived by the cut,
    first arrivals only, in arrival order."""
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    first = (events_df
             .withColumn("_n", F.row_number().over(W.partitionBy("event_id").orderBy("log_pos")))
             .where(F.col("_n") == 1).drop("_n"))
    counted = first.where((F.col("arrival_ts") <= F.lit(cut_ms))
                          & (F.col("event_ts") >= F.col("arrival_ts") - F.lit(MAX_LATENESS_MS)))
    ordered = counted.repartition("entity_id").sortWithinPartitions("entity_id", "log_pos")
    return ordered.mapInArrow(fold_batches(feature_set), _FOLDED)


def newest_arrival_ms(settings: Settings, feature_set) -> int | None:
    """The default cut: the latest arrival time (epoch ms) of the set's stream in the lake, or
    None if empty: ``ingest_ts`` (else the event time) for plain streams; a change stream's
    events arrive at their own time, as ``mercury.features.executors.events.normalise`` says."""
    import pyarrow.compute as pc

    from mercury.contracts import registry
    from mercury.lake import tables

    stream = registry.stream(feature_set.source.stream)
    if feature_set.source.envelope == "debezium":
        from mercury.features.executors.events import normalise
        from mercury.features.executors.spark.executor import lake_records

        arrivals = [e.arrival_ts for r in lake_records(settings, stream.name)
                    if (e := normalise(feature_set, r)) is not None]
        return max(arrivals, default=None)
    table = tables.catalog(settings).load_table(cast(str, stream.lake_table))  # a source has one
    names = {f.name for f in table.schema().fields}
    fields = [n for n in (tables.ARRIVAL_FIELD, stream.event_time_field) if n in names]
    data = table.scan(selected_fields=tuple(fields)).to_arrow()
    if data.num_rows == 0:
        return None

    def as_ms(column: str) -> pa.Array:
        values = data[column]
        if pa.types.is_timestamp(values.type):
            values = values.cast(pa.timestamp("ms", tz=values.type.tz)).cast(pa.int64())
        return values.cast(pa.int64())

    arrival = as_ms(fields[0])
    if len(fields) == 2:
        arrival = pc.coalesce(arrival, as_ms(fields[1]))
    newest = pc.max(arrival).as_py()
    return None if newest is None else int(newest)


# ---- the job ----------------------------------------------------------------------------------

def backfill_online(spark: SparkSession, settings: Settings, feature_set, cut_ms: int,
                    store: OnlineStore, log: Callable[[str], None] = print,
                    events_df: DataFrame | None = None) -> WarmStartResult:
    """Fill ``feature_set``'s online hashes and bootstraps in ``store`` from the lake up to
    arrival ``cut_ms`` (see the module doc). ``events_df`` defaults to the set's lake events
    (``spark_executor.lake_events_frame``)."""
    from pyspark.sql import functions as F

    from mercury.features.executors.spark import executor as spark_executor

    started = time.monotonic()
    if events_df is None:
        from pyiceberg.exceptions import NoSuchTableError

        try:
            events_df = spark_executor.lake_events_frame(spark, settings, feature_set)
        except NoSuchTableError:
            raise LakeBehind(f"{feature_set.ref}: the lake has no {feature_set.source.stream} "
                             "table yet; compact the log into the lake first") from None
    newest = cast("Row", events_df.agg(F.max("arrival_ts")).first())[0]  # an agg has one row
    if newest is None or newest < cut_ms:
        raise LakeBehind(
            f"{feature_set.ref}: the lake's {feature_set.source.stream} holds arrivals up to "
            f"{newest}, before the cut {cut_ms}; compact the log into the lake past the cut "
            f"(or choose an earlier cut) and run the warm start again")
    ttl_ms = state_ttl_ms(settings, feature_set)
    entities = events = 0
    writes, bootstraps = [], {}
    for row in fold_states(feature_set, events_df, cut_ms).toLocalIterator():
        state = incremental.decode_state(row["state"])
        writes.append(incremental.render_all(feature_set, state, row["entity_id"]))
        bootstraps[bootstrap_key(feature_set, row["entity_id"])] = bytes(row["state"])
        entities += 1
        events += row["events"]
        if len(writes) >= WRITE_BATCH:
            _flush(store, writes, bootstraps, ttl_ms)
            log(f"  {feature_set.ref}: {entities} entities written")
            writes, bootstraps = [], {}
    _flush(store, writes, bootstraps, ttl_ms)
    # The marker last: the streaming job refuses a version whose warm start did not finish.
    marker = {"cut_ms": cut_ms, "entities": entities, "events": events}
    store.put_values({marker_key(feature_set): orjson.dumps(marker)}, ttl_ms)
    result = WarmStartResult(feature_set.ref, cut_ms, entities, events, newest,
                             time.monotonic() - started)
    log(result.summary())
    return result


def _flush(store, writes: list, bootstraps: dict, ttl_ms: int) -> None:
    if writes:
        store.write(writes)
        store.put_values(bootstraps, ttl_ms)


# ---- the streaming side -----------------------------------------------------------------------

def read_marker(store, feature_set) -> dict | None:
    raw = store.get_values([marker_key(feature_set)])[0]
    return None if raw is None else orjson.loads(raw)


def seam(store, feature_set) -> Seam:
    """The streaming job's seam for a warm-started version: the cut from its marker, and a
    loader of each entity's bootstrap that refuses once the warm start is gone."""
    marker = read_marker(store, feature_set)
    if marker is None:
        raise WarmStartMissing(_missing(feature_set))

    def load(entity_id: str) -> incremental.SetState | None:
        boot, still = store.get_values([bootstrap_key(feature_set, entity_id),
                                        marker_key(feature_set)])
        if still is None:
            raise WarmStartMissing(_missing(feature_set))
        return None if boot is None else incremental.decode_state(boot)

    return Seam(cut_ms=int(marker["cut_ms"]), load=load)


def _missing(feature_set) -> str:
    return (f"{feature_set.ref}: no warm start in the online store (never run, or expired "
            f"after its state TTL); run `mercury features warm-start {feature_set.ref} "
            f"--cut-ms <T>` before the streaming job takes this version over")

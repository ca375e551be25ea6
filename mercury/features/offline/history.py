"""Offline feature history: one Iceberg table per feature-set version, one row per entity and day.

Design notes: docs/BATCH.md, "Feature history in detail".
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, cast

import orjson
import pyarrow as pa

from mercury.durations import DAY_MS
from mercury.features.definition.dsl import Aggregate, FeatureSet
from mercury.features.definition.semantics import MAX_LATENESS_MS
from mercury.features.definition.windows import window
from mercury.features.executors.events import FeatureEvent, normalise

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table
    from pyspark.sql import DataFrame, SparkSession

    from mercury.config import Settings

KEY_COLUMNS = ("entity_id", "as_of_date", "as_of_ms")
COMPUTED_AT = "computed_at"
DAYS_PROPERTY = "mercury.history.days"
DEFINITION_PROPERTY = "mercury.history.definition_sha256"
SOURCE_PROPERTY = "mercury.history.source_table"
EMPTY_LAKE = "empty"  # the record key of days computed while the lake table had no snapshot
EPOCH = date(1970, 1, 1)
# pyiceberg retries a commit that lost a race by re-applying it on top of the winner. Ours
# carry a plan (which days, what the record says) made from what we read: a run must plan again
# instead (``backfill``), so the table asks pyiceberg not to rebase.
NO_REBASE = {"commit.retry.num-retries": "0"}

NEW, CHANGED, FORCED = "new", "changed", "forced"


class HistoryError(ValueError):
    """A history table cannot be built or read as asked; the message says why."""


@dataclass(frozen=True)
class BackfillResult:
    days_written: int  # days computed and replaced
    rows_written: int
    days_skipped: int  # days of the range whose stored values could not have changed
    source_snapshot_id: int | None  # the lake snapshot every day of the range now reflects
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)  # days written per reason

    @property
    def rows(self) -> int:
        return self.rows_written

    @property
    def skipped_days(self) -> int:
        return self.days_skipped


# ---- days and the table ----------------------------------------------------------------------

def day_start_ms(day: date) -> int:
    return (day - EPOCH).days * DAY_MS


def day_end_ms(day: date) -> int:
    """The as-of time of a day's history: its last millisecond (UTC)."""
    return day_start_ms(day) + DAY_MS - 1


def day_of(epoch_ms: int) -> date:
    return EPOCH + timedelta(days=epoch_ms // DAY_MS)


def days_in(start: date, end: date) -> list[date]:
    if end < start:
        raise HistoryError(f"the range {start}..{end} is inverted: the end is before the start")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def table_identifier(settings: Settings, feature_set: FeatureSet) -> str:
    return f"{settings.offline.namespace}.{feature_set.name}_v{feature_set.version}"


def arrow_schema(feature_set: FeatureSet) -> pa.Schema:
    names = [f.name for f in feature_set.features]
    clash = set(names) & {*KEY_COLUMNS, COMPUTED_AT}
    if clash:
        raise HistoryError(f"{feature_set.ref}: feature name(s) {sorted(clash)} collide with "
                           "the history table's own columns")
    return pa.schema([
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("as_of_date", pa.date32(), nullable=False),
        pa.field("as_of_ms", pa.int64(), nullable=False),
        *(pa.field(name, pa.string()) for name in names),
        pa.field(COMPUTED_AT, pa.timestamp("us", tz="UTC"), nullable=False),
    ])


def definition_digest(feature_set: FeatureSet) -> str:
    from mercury.features.definition.compile import render

    return hashlib.sha256(render(feature_set).encode()).hexdigest()


def _source_table(feature_set: FeatureSet) -> str:
    from mercury.contracts import registry

    table = registry.stream(feature_set.source.stream).lake_table
    if not table:
        raise HistoryError(f"{feature_set.ref}: stream {feature_set.source.stream!r} has no "
                           "lake table to compute history from")
    return table


def ensure_table(settings: Settings, feature_set: FeatureSet) -> Table:
    """The set's history table, created (partitioned by ``as_of_date``) if missing; an
    existing table with other columns is an error, never altered."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.transforms import IdentityTransform

    from mercury.lake import tables

    identifier = table_identifier(settings, feature_set)
    schema = arrow_schema(feature_set)
    cat = tables.catalog(settings)
    try:
        table = cat.load_table(identifier)
    except NoSuchTableError:
        properties = {"mercury.feature_set": feature_set.ref,
                      SOURCE_PROPERTY: _source_table(feature_set),
                      DEFINITION_PROPERTY: definition_digest(feature_set), **NO_REBASE}
        return tables.create_table(cat, identifier, schema, properties,
                                   ("as_of_date", IdentityTransform(), "as_of_date"))
    have = [f.name for f in table.schema().fields]
    if have != schema.names:
        raise HistoryError(f"{identifier} has columns {have}, but {feature_set.ref} needs "
                           f"{schema.names}; a set version's columns never change")
    return table


# ---- the record of what each day reflects --------------------------------------------------

def recorded_days(properties: dict[str, str]) -> dict[date, str]:
    """``{day: snapshot key}`` from the table properties (a key is a snapshot id as text, or
    ``EMPTY_LAKE``)."""
    raw = json.loads(properties.get(DAYS_PROPERTY) or "{}")
    days: dict[date, str] = {}
    for key, ranges in raw.items():
        for first, last in ranges:
            for day in days_in(date.fromisoformat(first), date.fromisoformat(last)):
                days[day] = key
    return days


def render_days(days: dict[date, str]) -> str:
    """The property text: per snapshot key, sorted runs of consecutive days."""
    by_key: dict[str, list[list[str]]] = {}
    previous: tuple[date, str] | None = None
    for day in sorted(days):
        key = days[day]
        runs = by_key.setdefault(key, [])
        if previous == (day - timedelta(days=1), key):
            runs[-1][1] = day.isoformat()
        else:
            runs.append([day.isoformat(), day.isoformat()])
        previous = (day, key)
    return json.dumps(dict(sorted(by_key.items())), separators=(",", ":"))


def snapshot_key(snapshot_id: int | None) -> str:
    return EMPTY_LAKE if snapshot_id is None else str(snapshot_id)


# ---- what changed between two snapshots ----------------------------------------------------

def lake_events(settings: Settings, feature_set: FeatureSet, snapshot_id: int | None,
                days: Iterable[date] | None = None) -> list[FeatureEvent]:
    """The set's events in the lake at a snapshot, in arrival order (none for no snapshot);
    with ``days``, only those whose event time (the lake's partition) falls on one of them."""
    from mercury.features.executors.spark.executor import lake_records

    if snapshot_id is None:
        return []
    where = None if days is None else _event_days_filter(feature_set, days)
    records = lake_records(settings, feature_set.source.stream, snapshot_id=snapshot_id,
                           row_filter=where)
    return [e for r in records if (e := normalise(feature_set, r)) is not None]


def _event_days_filter(feature_set: FeatureSet, days: Iterable[date]) -> BooleanExpression:
    from pyiceberg.expressions import AlwaysFalse, And, Or

    from mercury.contracts import registry
    from mercury.lake.predicates import GreaterThanOrEqual, LessThan

    # Days come from a table partitioned by day of its event time field (``touched_days``).
    field_name = cast(str, registry.stream(feature_set.source.stream).event_time_field)
    where: BooleanExpression = AlwaysFalse()
    for first, last, _ in _runs(dict.fromkeys(sorted(days), "")):
        low = datetime.fromtimestamp(day_start_ms(first) / 1000, UTC).isoformat()
        high = datetime.fromtimestamp(day_start_ms(last + timedelta(days=1)) / 1000,
                                      UTC).isoformat()
        where = Or(where, And(GreaterThanOrEqual(field_name, low), LessThan(field_name, high)))
    return where


def longest_window_ms(feature_set: FeatureSet) -> int | None:
    """How long an event can matter, if every feature is a windowed aggregate; else None."""
    if not all(isinstance(f, Aggregate) for f in feature_set.features):
        return None
    aggregates = cast("tuple[Aggregate, ...]", feature_set.features)  # all (checked above)
    return max(window(text).length_ms for f in aggregates for text in f.windows)


def _counts_from(event: FeatureEvent) -> int | None:
    """The first as-of time the event counts at; None if it never counts (too late)."""
    if event.event_ts < event.arrival_ts - MAX_LATENESS_MS:
        return None
    return max(event.arrival_ts, event.event_ts)


def _first_counting(events: Iterable[FeatureEvent], entities: set[str]) -> dict[str, int]:
    first: dict[str, int] = {}
    for event in events:
        if event.entity_id in entities and (t := _counts_from(event)) is not None:
            first[event.entity_id] = min(t, first.get(event.entity_id, t))
    return first


Span = tuple[date, date | None]  # first day, last day (None: every later day)


def changed_spans(feature_set: FeatureSet, old: Sequence[FeatureEvent],
                  new: Sequence[FeatureEvent], common: Sequence[FeatureEvent] = ()) -> list[Span]:
    """The days whose values can differ between the two event lists (see the module doc).
    ``common`` are events both sides also have, unchanged (the lake days no snapshot in
    between touched): they are not diffed, but they say since when an entity is present."""
    def by_id(events):
        kept: dict[str, FeatureEvent] = {}
        for event in events:
            kept.setdefault(event.event_id, event)  # the first arrival, as every executor
        return kept

    before, after = by_id(old), by_id(new)
    longest = longest_window_ms(feature_set)
    spans: list[Span] = []
    entities: set[str] = set()
    for event_id in before.keys() | after.keys():
        versions = [v for v in (before.get(event_id), after.get(event_id)) if v is not None]
        if len(versions) == 2 and versions[0] == versions[1]:
            continue
        for version in versions:
            entities.add(version.entity_id)
            counts_from = _counts_from(version)
            if counts_from is None:
                continue
            first = day_of(counts_from)
            last = None if longest is None else day_of(version.event_ts + longest - 1)
            if last is None or last >= first:
                spans.append((first, last))
    first_before = _first_counting([*common, *before.values()], entities)
    first_after = _first_counting([*common, *after.values()], entities)
    for entity in entities:
        a, b = first_before.get(entity), first_after.get(entity)
        if a == b:
            continue
        known = [t for t in (a, b) if t is not None]
        low = day_of(min(known))
        high = None if len(known) < 2 else day_of(max(known)) - timedelta(days=1)
        if high is None or high >= low:
            spans.append((low, high))
    return spans


def in_spans(day: date, spans: Iterable[Span]) -> bool:
    return any(first <= day and (last is None or day <= last) for first, last in spans)


# ---- the plan ------------------------------------------------------------------------------

def plan(days: Sequence[date], recorded: dict[date, str], current: int | None,
         kept_snapshots: frozenset[int], spans_since: Callable[[int | None], list[Span]],
         forced: bool) -> dict[date, str]:
    """``{day: reason}`` for the days of ``days`` that must be computed (``NEW``, ``CHANGED``,
    ``FORCED``); ``spans_since(snapshot_id)`` gives the days the lake's changes from that
    snapshot to ``current`` can affect."""
    todo: dict[date, str] = {}
    by_key: dict[str, list[date]] = {}
    for day in days:
        if day not in recorded:
            todo[day] = NEW
        elif forced:
            todo[day] = FORCED
        else:
            by_key.setdefault(recorded[day], []).append(day)
    current_key = snapshot_key(current)
    for key, group in by_key.items():
        if key == current_key:
            continue
        old_id = None if key == EMPTY_LAKE else int(key)
        if old_id is not None and old_id not in kept_snapshots:
            todo.update(dict.fromkeys(group, FORCED))  # expired: nothing to diff against
            continue
        spans = spans_since(old_id)
        todo.update({day: CHANGED for day in group if in_spans(day, spans)})
    return dict(sorted(todo.items()))


# ---- computing days (Spark) ----------------------------------------------------------------

def queries_frame(spark: SparkSession, events_df: DataFrame, days: Sequence[date]) -> DataFrame:
    """One query per (entity, day) for the entities with a counting event by the day's end:
    an entity counts from its first event that is not too late, at max(arrival, event time)."""
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    ends = spark.createDataFrame([(day_end_ms(d),) for d in days], "as_of_ms long")
    first = (events_df
             .withColumn("_n", F.row_number().over(W.partitionBy("event_id").orderBy("log_pos")))
             .where((F.col("_n") == 1)
                    & (F.col("event_ts") >= F.col("arrival_ts") - F.lit(MAX_LATENESS_MS)))
             .groupBy("entity_id")
             .agg(F.min(F.greatest("arrival_ts", "event_ts")).alias("_from")))
    return (first.crossJoin(F.broadcast(ends))
            .where(F.col("as_of_ms") >= F.col("_from"))
            .select(F.concat_ws("@", "entity_id", F.col("as_of_ms").cast("string"))
                    .alias("query_id"), "entity_id", "as_of_ms"))


def compute_days(spark: SparkSession, feature_set: FeatureSet, events: Sequence[FeatureEvent],
                 days: Sequence[date], computed_at: datetime) -> pa.Table:
    """The history rows of ``days`` from events (in arrival order), in one Spark job."""
    from mercury.features.executors.spark import executor as sx

    schema = arrow_schema(feature_set)
    if not days or not events:
        return schema.empty_table()
    events_df = spark.createDataFrame(sx.events_table_of(feature_set, events))
    result = sx.point_in_time(feature_set, events_df, queries_frame(spark, events_df, days))
    rows = result.select("entity_id", "as_of_ms", sx.VALUES).toArrow()
    return to_rows(feature_set, rows, computed_at)


def to_rows(feature_set: FeatureSet, result: pa.Table, computed_at: datetime) -> pa.Table:
    """``entity_id, as_of_ms, values`` (Spark's answer) as history rows, sorted by (day,
    entity); each feature's value as sorted-key compact JSON."""
    schema = arrow_schema(feature_set)
    names = [f.name for f in feature_set.features]
    order = sorted(range(result.num_rows), key=lambda i: (result["as_of_ms"][i].as_py(),
                                                          result["entity_id"][i].as_py()))
    entity_ids = result["entity_id"].to_pylist()
    as_of = result["as_of_ms"].to_pylist()
    texts = result["values"].to_pylist()
    columns: dict[str, list] = {name: [] for name in names}
    for i in order:
        if texts[i] is None:
            raise HistoryError(f"{feature_set.ref}: {entity_ids[i]} has no values as of "
                               f"{as_of[i]}, yet was queried as present")
        values = orjson.loads(texts[i])
        for name in names:
            value = values.get(name)
            columns[name].append(None if value is None else
                                 orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
    ordered_as_of = [as_of[i] for i in order]
    return pa.Table.from_arrays([
        pa.array([entity_ids[i] for i in order], pa.string()),
        pa.array([day_of(t) for t in ordered_as_of], pa.date32()),
        pa.array(ordered_as_of, pa.int64()),
        *(pa.array(columns[name], pa.string()) for name in names),
        pa.array([computed_at] * len(order), pa.timestamp("us", tz="UTC")),
    ], schema=schema)


# ---- the job -------------------------------------------------------------------------------

def _describe(todo: dict[date, str]) -> str:
    counts: dict[str, int] = {}
    for reason in todo.values():
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "none"


COMMIT_ATTEMPTS = 3


def backfill(spark: SparkSession, settings: Settings, fs: FeatureSet,
             start: date, end: date, full: bool = False,
             progress: Callable[[str], None] | None = None) -> BackfillResult:
    """Compute and store the history of ``start..end`` (inclusive) that can have changed since
    it was last computed (all of it with ``full``); see the module doc.

    Another run committing data to the same table in between makes the commit fail (see
    ``NO_REBASE``); the run then plans again from what that run recorded. A run that only
    moved records (no data) does not conflict: its records may be replaced by older ones,
    which can cost a diff or a recomputation later, never a stale day."""
    from pyiceberg.exceptions import CommitFailedException

    began = time.monotonic()
    days = days_in(start, end)
    say = progress or (lambda _text: None)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            todo, rows, current = _run_once(spark, settings, fs, days, full, say)
            break
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS:
                raise
            say(f"{fs.ref}: another run committed to the history table first; planning again")
    reasons: dict[str, int] = {}
    for reason in todo.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    result = BackfillResult(days_written=len(todo), rows_written=rows.num_rows,
                            days_skipped=len(days) - len(todo), source_snapshot_id=current,
                            seconds=round(time.monotonic() - began, 3), reasons=reasons)
    say(f"{fs.ref} {days[0]}..{days[-1]}: {result.days_written} day(s) written "
        f"({result.rows_written:,} rows), {result.days_skipped} unchanged, lake snapshot "
        f"{snapshot_key(current)}, {result.seconds:.1f} s")
    return result


def _runs(todo: dict[date, str]) -> list[tuple[date, date, str]]:
    """Consecutive days with the same reason, for progress lines."""
    runs: list[tuple[date, date, str]] = []
    for day, reason in todo.items():
        if runs and runs[-1][2] == reason and runs[-1][1] == day - timedelta(days=1):
            runs[-1] = (runs[-1][0], day, reason)
        else:
            runs.append((day, day, reason))
    return runs


def _run_once(spark: SparkSession, settings: Settings, fs: FeatureSet, days: list[date],
              full: bool, say: Callable[[str], None]
              ) -> tuple[dict[date, str], pa.Table, int | None]:
    """Plan, compute and commit once: (the days computed with why, their rows, the lake
    snapshot they reflect)."""
    from mercury.lake import tables
    from mercury.lake.predicates import In

    table = ensure_table(settings, fs)
    properties = dict(table.properties)
    digest = definition_digest(fs)
    redefined = properties.get(DEFINITION_PROPERTY) != digest
    recorded = recorded_days(properties)
    current, kept = tables.snapshot_ids(settings, fs.source.stream)

    cache: dict[int | None, list[FeatureEvent]] = {}

    def events_at(snapshot_id: int | None) -> list[FeatureEvent]:
        if snapshot_id not in cache:
            cache[snapshot_id] = lake_events(settings, fs, snapshot_id)
        return cache[snapshot_id]

    def spans_since(old_id: int | None) -> list[Span]:
        """Diff the lake days touched since ``old_id`` (all of them if that cannot be told)."""
        touched = None if old_id is None or current is None else \
            tables.touched_days(settings, fs.source.stream, old_id, current)
        now = events_at(current)
        if touched is not None and not touched:
            return []  # e.g. only the history's own record moved, or nothing was written
        if touched is None:
            say(f"  lake changes since {snapshot_key(old_id)}: diffing every day")
            return changed_spans(fs, events_at(old_id), now)
        say(f"  lake changes since {old_id}: {len(touched)} touched day(s) to diff")
        inside = [e for e in now if day_of(e.event_ts) in touched]
        outside = [e for e in now if day_of(e.event_ts) not in touched]
        return changed_spans(fs, lake_events(settings, fs, old_id, touched), inside, outside)

    todo = plan(days, recorded, current, kept, spans_since, full or redefined)
    say(f"{fs.ref} -> {table_identifier(settings, fs)}: {len(days)} day(s) "
        f"{days[0]}..{days[-1]}, lake snapshot {snapshot_key(current)}; to compute: "
        f"{len(todo)} ({_describe(todo)})")
    for first, last, reason in _runs(todo):
        say(f"  {first if first == last else f'{first}..{last}'}: {reason}")

    rows = compute_days(spark, fs, events_at(current), list(todo), datetime.now(UTC))
    # A changed definition invalidates the other days' records too: they become "new".
    updated = {**({} if redefined else recorded), **dict.fromkeys(days, snapshot_key(current))}
    new_properties = {DAYS_PROPERTY: render_days(updated), DEFINITION_PROPERTY: digest,
                      **NO_REBASE}
    if todo or any(properties.get(k) != v for k, v in new_properties.items()):
        with table.transaction() as tx:
            if todo and table.current_snapshot() is not None:
                with warnings.catch_warnings():
                    # Days never stored before have nothing to delete; pyiceberg warns so.
                    warnings.filterwarnings("ignore", "Delete operation did not match")
                    tx.delete(In("as_of_date", [d.isoformat() for d in todo]))
            if rows.num_rows:
                tx.append(rows)
            tx.set_properties(new_properties)
    return todo, rows, current


def read(settings: Settings, fs: FeatureSet, start: date | None = None,
         end: date | None = None) -> pa.Table:
    """The stored history of ``start..end`` (inclusive; open where None), sorted by (day,
    entity)."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import AlwaysTrue, And

    from mercury.lake.predicates import GreaterThanOrEqual, LessThanOrEqual
    from mercury.lake.tables import catalog

    identifier = table_identifier(settings, fs)
    try:
        table = catalog(settings).load_table(identifier)
    except NoSuchTableError:
        raise HistoryError(f"{identifier} does not exist: run the backfill of {fs.ref} "
                           "first (python -m spark_jobs.backfill)") from None
    where: BooleanExpression = AlwaysTrue()
    if start is not None:
        where = And(where, GreaterThanOrEqual("as_of_date", start.isoformat()))
    if end is not None:
        where = And(where, LessThanOrEqual("as_of_date", end.isoformat()))
    return table.scan(row_filter=where).to_arrow().sort_by(
        [("as_of_date", "ascending"), ("entity_id", "ascending")])


def decode_row(feature_set: FeatureSet, row: dict) -> dict[str, object]:
    """A history row (as ``read(...).to_pylist()`` gives) as ``{feature: value}``, the
    reference's structure."""
    return {f.name: None if row[f.name] is None else orjson.loads(row[f.name])
            for f in feature_set.features}

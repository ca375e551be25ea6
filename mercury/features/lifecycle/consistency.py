"""Online/offline consistency: what was served (or what the online store holds) against the same
definition recomputed in Spark from the lake, as of the same time, feature by feature.

Design notes: docs/BATCH.md, "Online/offline consistency in detail".
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mercury.features.definition.dsl import FeatureSet
from mercury.features.executors.agreement import same

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mercury.config import Settings
    from mercury.online.store import OnlineStore

AUDIT_STREAM = "inference_audit"
FRESHNESS_ALLOWANCE_MS = 5_000
MAX_EXAMPLES = 5
ONLINE = "online"  # the serving source whose values are measured (mercury.serving.features)
_SEP = "\x1f"  # joins an entity id and a query id into a per-query entity (never in ids)
_UNMAPPED = "\x00unmapped"  # an entity id no event has: Spark finds nothing for it

Progress = Callable[[str], None]


# ---- the report ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    entity: str  # the user token
    as_of_ms: int
    served: object
    recomputed: object
    in_flight: bool = False

    def describe(self) -> str:
        when = _iso(self.as_of_ms)
        note = " (explained by an event in flight)" if self.in_flight else ""
        return (f"{self.entity} as of {when} ({self.as_of_ms}): served {_short(self.served)}, "
                f"recomputed {_short(self.recomputed)}{note}")


def _short(value, limit: int = 160) -> str:
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class FeatureScore:
    ref: str
    feature: str
    matched: int = 0
    total: int = 0
    in_flight: int = 0  # mismatches explained by an event in flight (not matches)
    examples: list[Example] = field(default_factory=list)

    @property
    def share(self) -> float | None:
        return self.matched / self.total if self.total else None

    def to_dict(self) -> dict:
        return {"set": self.ref, "feature": self.feature, "matched": self.matched,
                "total": self.total, "share": self.share, "in_flight": self.in_flight,
                "examples": [{"entity": e.entity, "as_of_ms": e.as_of_ms, "served": e.served,
                              "recomputed": e.recomputed, "in_flight": e.in_flight}
                             for e in self.examples]}


@dataclass
class ConsistencyReport:
    kind: str  # served | online
    scope: dict = field(default_factory=dict)  # time range or as-of, version, sample size
    scores: dict[tuple[str, str], FeatureScore] = field(default_factory=dict)
    requests: int = 0  # audit records read (served) or entities read (online)
    unmapped_tokens: int = 0  # served to users with no event in the lake
    degraded: Counter = field(default_factory=Counter)  # (set ref, source) -> values not online
    max_examples: int = MAX_EXAMPLES

    def score_of(self, ref: str, feature: str) -> FeatureScore:
        key = (ref, feature)
        if key not in self.scores:
            self.scores[key] = FeatureScore(ref, feature)
        return self.scores[key]

    def record(self, ref: str, feature: str, entity: str, as_of_ms: int, served,
               recomputed) -> bool:
        """Count one comparison; True when it matched."""
        score = self.score_of(ref, feature)
        score.total += 1
        if same(served, recomputed):
            score.matched += 1
            return True
        if len(score.examples) < self.max_examples:
            score.examples.append(Example(entity, as_of_ms, served, recomputed))
        return False

    def explain_in_flight(self, ref: str, feature: str, entity: str, as_of_ms: int) -> None:
        score = self.scores[(ref, feature)]
        score.in_flight += 1
        score.examples = [Example(e.entity, e.as_of_ms, e.served, e.recomputed, True)
                          if (e.entity, e.as_of_ms) == (entity, as_of_ms) else e
                          for e in score.examples]

    @property
    def compared(self) -> int:
        return sum(s.total for s in self.scores.values())

    @property
    def score(self) -> float | None:
        """The least share over the features that had anything to compare."""
        shares = [s.share for s in self.scores.values() if s.share is not None]
        return min(shares) if shares else None

    def failing_features(self, min_share: float) -> list[FeatureScore]:
        return [s for _, s in sorted(self.scores.items())
                if s.share is not None and s.share < min_share]

    def passes(self, min_share: float) -> bool:
        """At least ``min_share`` for every feature; nothing compared never passes (a gate
        must not open on an empty measurement)."""
        return self.compared > 0 and not self.failing_features(min_share)

    def to_json(self) -> str:
        return orjson.dumps({
            "kind": self.kind, "scope": self.scope, "score": self.score,
            "compared": self.compared, "requests": self.requests,
            "unmapped_tokens": self.unmapped_tokens,
            "degraded": [{"set": ref, "source": source, "values": n}
                         for (ref, source), n in sorted(self.degraded.items())],
            "features": [s.to_dict() for _, s in sorted(self.scores.items())],
        }, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()

    def table(self) -> list[str]:
        """One line per feature: matched/total and share."""
        lines = [f"{'feature':<48} {'matched':>9} {'total':>9} {'share':>9} {'in flight':>9}"]
        for (ref, name), s in sorted(self.scores.items()):
            share = "-" if s.share is None else f"{100 * s.share:.3f}%"
            lines.append(f"{ref + '.' + name:<48} {s.matched:>9,} {s.total:>9,} {share:>9} "
                         f"{s.in_flight:>9,}")
        return lines

    def summary(self, min_share: float = 1.0) -> str:
        score = "-" if self.score is None else f"{100 * self.score:.3f}%"
        head = (f"consistency ({self.kind}): {self.compared:,} values over "
                f"{len(self.scores)} features, score {score} (least share), "
                f"{'PASS' if self.passes(min_share) else 'FAIL'} at {100 * min_share:g}%")
        lines = [head]
        if self.compared == 0:
            lines.append("  nothing was compared: no served values or entities in scope")
        for (ref, source), n in sorted(self.degraded.items()):
            lines.append(f"  {ref}: {n:,} values served from {source}, not measured")
        if self.unmapped_tokens:
            lines.append(f"  {self.unmapped_tokens:,} request(s) for users with no event in "
                         "the lake (expected: empty values)")
        for s in self.failing_features(min_share):
            lines.append(f"  FAILING {s.ref}.{s.feature}: {s.matched:,}/{s.total:,} "
                         f"({100 * cast(float, s.share):.3f}%), {s.in_flight:,} explained "
                         "by events in flight")  # a failing feature has a share
            lines += [f"    e.g. {e.describe()}" for e in s.examples]
        return "\n".join(lines)


# ---- shared: events from the lake, Spark recompute ----------------------------------------

class _Lake:
    """Each set's events (``spark_executor.EVENT_COLUMNS`` as Arrow), read once per stream."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._records: dict[str, list[dict]] = {}

    def events(self, feature_set: FeatureSet) -> pa.Table:
        from mercury.features.executors.spark.executor import events_table, lake_records

        stream = feature_set.source.stream
        if stream not in self._records:
            self._records[stream] = lake_records(self.settings, stream)
        return events_table(feature_set, self._records[stream])


def _recompute(spark: SparkSession, feature_set: FeatureSet, events_df: DataFrame,
               queries: Sequence[tuple[str, str, int]]) -> dict[str, dict | None]:
    """``{query_id: values or None}`` from ``point_in_time``."""
    from mercury.features.executors.spark.executor import (
        QUERY_COLUMNS,
        decode_values,
        point_in_time,
    )

    if not queries:
        return {}
    frame = spark.createDataFrame(list(queries), "query_id string, entity_id string, "
                                                 "as_of_ms long").select(*QUERY_COLUMNS)
    return {r["query_id"]: decode_values(r["values"])
            for r in point_in_time(feature_set, events_df, frame).collect()}


def _recompute_without_in_flight(spark: SparkSession, feature_set: FeatureSet,
                                 events_df: DataFrame, queries: Sequence[tuple[str, str, int]],
                                 allowance_ms: int) -> dict[str, dict | None]:
    """Like ``_recompute``, but each query leaves out the events that arrived within
    ``allowance_ms`` before its as-of time. Each query gets its own copy of its entity's events
    (entity and event ids suffixed with the query id), so the exclusion can depend on the
    query's time while ``point_in_time`` still sees one as-of per query."""
    from pyspark.sql import functions as F

    from mercury.features.executors.spark.executor import EVENT_COLUMNS

    if not queries:
        return {}
    wanted = spark.createDataFrame(list(queries), "_q string, _e string, _t long")
    own = (events_df.join(wanted, F.col("entity_id") == F.col("_e"))
           .where(~((F.col("arrival_ts") > F.col("_t") - F.lit(allowance_ms))
                    & (F.col("arrival_ts") <= F.col("_t"))))
           .withColumn("entity_id", F.concat_ws(_SEP, "entity_id", "_q"))
           .withColumn("event_id", F.concat_ws(_SEP, "event_id", "_q"))
           .select(*EVENT_COLUMNS))
    return _recompute(spark, feature_set, own,
                      [(q, f"{entity}{_SEP}{q}", t) for q, entity, t in queries])


def _empty_values(feature_set: FeatureSet, as_of_ms: int) -> dict:
    """What the online reader (and so the service) gives for an entity with no hash: the
    expected values of an entity with no counting event, as JSON would carry them."""
    from mercury.features.reader import decode

    return orjson.loads(orjson.dumps(decode(feature_set, {}, as_of_ms)))


def _entities(events: pa.Table) -> set[str]:
    return set(pc.unique(events["entity_id"]).to_pylist())


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


# ---- served values (the audit lake) -------------------------------------------------------

@dataclass(frozen=True)
class _Served:
    request_id: str
    token: str
    as_of_ms: int
    values: dict


def served_requests(settings: Settings, since_ms: int, until_ms: int) -> pa.Table:
    """Audit rows with ``since_ms <= event_ts < until_ms`` and an as-of time, times as epoch
    ms; the columns the measurement reads."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import And

    from mercury.contracts import registry
    from mercury.lake import tables
    from mercury.lake.predicates import GreaterThanOrEqual, LessThan

    columns = ("request_id", "event_ts", "user_token", "features_as_of", "feature_versions",
               "served_features_json", "degraded_parts")
    # The table is partitioned by day of event_ts: the filter reads only the range's days.
    in_range = And(GreaterThanOrEqual("event_ts", _iso(since_ms)),
                   LessThan("event_ts", _iso(until_ms)))
    try:
        table = tables.read(settings, AUDIT_STREAM, in_range)
    except NoSuchTableError:
        name = registry.stream(AUDIT_STREAM).lake_table
        raise ValueError(f"no audit records in the lake: {name} does not exist (load them "
                         f"first: mercury lake load --stream {AUDIT_STREAM})") from None
    table = table.select(list(columns)).filter(pc.is_valid(table["features_as_of"]))
    for name in ("event_ts", "features_as_of"):  # as epoch ms, like every time here
        as_ms = table[name].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        table = table.set_column(table.schema.get_field_index(name), name, as_ms)
    return table


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _served_by_set(rows: Iterable[dict], set_refs: set[str] | None,
                   report: ConsistencyReport) -> dict[str, list[_Served]]:
    """``{set ref: [served online values]}``; values not served online are counted as
    degraded."""
    by_ref: dict[str, list[_Served]] = defaultdict(list)
    for row in rows:
        report.requests += 1
        versions = dict(row["feature_versions"] or [])
        served = orjson.loads(row["served_features_json"] or "{}")
        sources = {}
        for part in row["degraded_parts"] or []:  # features.<set>:<source>:<reason>
            head, _, rest = part.partition(":")
            if head.startswith("features."):
                sources[head.removeprefix("features.")] = rest.partition(":")[0]
        for name, version in versions.items():
            ref = f"{name}.v{version}"
            if set_refs is not None and ref not in set_refs:
                continue
            source = sources.get(name, ONLINE)
            if source != ONLINE or served.get(name) is None:
                report.degraded[(ref, source if source != ONLINE else "unavailable")] += 1
                continue
            by_ref[ref].append(_Served(row["request_id"], row["user_token"],
                                       row["features_as_of"], served[name]))
    return by_ref


def measure_served(spark: SparkSession, settings: Settings, since_ms: int, until_ms: int,
                   set_refs: Sequence[str] | None = None,
                   executor_feature_sets: dict[str, FeatureSet] | None = None,
                   freshness_allowance_ms: int = FRESHNESS_ALLOWANCE_MS,
                   max_examples: int = MAX_EXAMPLES,
                   progress: Progress | None = None) -> ConsistencyReport:
    """Served values of requests in ``[since_ms, until_ms)`` (request time) against Spark.

    ``set_refs`` limits the sets measured (``"spending.v1"``); ``executor_feature_sets[ref]``
    replaces the compiled definition Spark recomputes ``ref`` with (to check a changed
    definition against what was served, or, in tests, to break one side on purpose)."""
    from mercury.features.definition.compile import load_compiled
    from mercury.privacy.keys import load_keys
    from mercury.privacy.protect import user_tokens

    overrides = dict(executor_feature_sets or {})
    report = ConsistencyReport("served", {"since_ms": since_ms, "until_ms": until_ms,
                                          "freshness_allowance_ms": freshness_allowance_ms},
                               max_examples=max_examples)
    rows = served_requests(settings, since_ms, until_ms).to_pylist()
    _say(progress, f"audit: {len(rows):,} requests with served features in range")
    by_ref = _served_by_set(rows, set(set_refs) if set_refs is not None else None, report)
    if not by_ref:
        return report
    compiled = [r for r in sorted(by_ref) if r not in overrides]
    definitions = {fs.ref: fs for fs in (load_compiled(compiled) if compiled else [])}
    definitions.update({ref: fs for ref, fs in overrides.items() if ref in by_ref})

    lake = _Lake(settings)
    events = {ref: lake.events(fs) for ref, fs in definitions.items()}
    keys = load_keys(settings)
    # Every retained tokenization version: served records from before a rotation carry the
    # token of their day.
    ids_by_token = {token: entity for table in events.values() for entity in _entities(table)
                    for token in user_tokens(keys, entity).values()}
    report.unmapped_tokens = len({s.request_id for served in by_ref.values() for s in served
                                  if s.token not in ids_by_token})

    for ref in sorted(by_ref):
        fs, served = definitions[ref], by_ref[ref]
        _say(progress, f"{ref}: recomputing {len(served):,} served values from "
                       f"{events[ref].num_rows:,} lake events")
        frame = spark.createDataFrame(events[ref])
        queries = [(s.request_id, ids_by_token.get(s.token, _UNMAPPED), s.as_of_ms)
                   for s in served]
        got = _recompute(spark, fs, frame, queries)
        mismatched: dict[str, list[str]] = {}
        for s in served:
            expected = got.get(s.request_id) or _empty_values(fs, s.as_of_ms)
            # Both sides' features: one served but no longer defined is a mismatch too.
            names = [f.name for f in fs.features]
            names += sorted(set(s.values) - set(names))
            for name in names:
                if not report.record(ref, name, s.token, s.as_of_ms, s.values.get(name),
                                     expected.get(name)):
                    mismatched.setdefault(s.request_id, []).append(name)
        if mismatched:
            _say(progress, f"{ref}: {len(mismatched):,} requests differ; checking events "
                           f"in flight ({freshness_allowance_ms} ms)")
            by_id = {s.request_id: s for s in served}
            again = _recompute_without_in_flight(
                spark, fs, frame, [q for q in queries if q[0] in mismatched],
                freshness_allowance_ms)
            for request_id, features in mismatched.items():
                s = by_id[request_id]
                expected = again.get(request_id) or _empty_values(fs, s.as_of_ms)
                for name in features:
                    if same(s.values.get(name), expected.get(name)):
                        report.explain_in_flight(ref, name, s.token, s.as_of_ms)
        # Every feature was recorded for each served request above: each has a share.
        worst = min((cast(float, report.scores[(ref, f.name)].share) for f in fs.features),
                    default=None)
        _say(progress, f"{ref}: least share {100 * worst:.3f}%" if worst is not None else
             f"{ref}: nothing compared")
    return report


# ---- online hashes of one version ---------------------------------------------------------

def measure_online(spark: SparkSession, settings: Settings, feature_set: FeatureSet,
                   store: OnlineStore, as_of_ms: int | None = None,
                   entity_ids: Sequence[str] | None = None, sample: int | None = None,
                   executor_feature_set: FeatureSet | None = None, seed: int = 0,
                   max_examples: int = MAX_EXAMPLES,
                   progress: Progress | None = None) -> ConsistencyReport:
    """The online hashes of ``feature_set`` in ``store`` (this version's keys, whether or not
    it is active) against Spark's recompute as of ``as_of_ms`` (default: the newest arrival of
    the set's stream in the lake). Entities: ``entity_ids``, else a seeded sample of ``sample``
    (default ``settings.offline.consistency_sample_entities``) of the entities with lake
    events.
    ``executor_feature_set`` is the definition Spark recomputes with (default: the same)."""
    from mercury.features.reader import decode
    from mercury.online import layout
    from mercury.privacy.keys import load_keys
    from mercury.privacy.protect import user_token

    recompute_with = executor_feature_set or feature_set
    events = _Lake(settings).events(recompute_with)
    if as_of_ms is None:
        if events.num_rows == 0:
            raise ValueError(f"{feature_set.ref}: no events of {feature_set.source.stream} in "
                             "the lake, so no as-of time to default to; pass as_of_ms")
        as_of_ms = pc.max(events["arrival_ts"]).as_py()
    if entity_ids is None:
        known = sorted(_entities(events))
        n = sample or settings.offline.consistency_sample_entities
        entity_ids = known if n >= len(known) else sorted(random.Random(seed).sample(known, n))
    entity_ids = list(entity_ids)
    report = ConsistencyReport("online", {"set": feature_set.ref, "as_of_ms": as_of_ms,
                                          "entities": len(entity_ids)},
                               max_examples=max_examples)
    report.requests = len(entity_ids)
    _say(progress, f"{feature_set.ref}: reading {len(entity_ids):,} online hashes as of "
                   f"{as_of_ms}")
    served = {}
    for start in range(0, len(entity_ids), 1_000):
        chunk = entity_ids[start:start + 1_000]
        hashes = store.read([layout.entity_key(feature_set, e) for e in chunk])
        for entity, fields in zip(chunk, hashes, strict=True):
            # Through JSON, as the service serves them: tuples become lists.
            served[entity] = orjson.loads(orjson.dumps(decode(feature_set, fields, as_of_ms)))
    _say(progress, f"{feature_set.ref}: recomputing in Spark from {events.num_rows:,} lake events")
    got = _recompute(spark, recompute_with, spark.createDataFrame(events),
                     [(e, e, as_of_ms) for e in entity_ids])
    keys = load_keys(settings)
    for entity in entity_ids:
        expected = got.get(entity) or _empty_values(recompute_with, as_of_ms)
        token = user_token(keys, entity)
        for feature in feature_set.features:
            report.record(feature_set.ref, feature.name, token, as_of_ms,
                          served[entity].get(feature.name), expected.get(feature.name))
    return report

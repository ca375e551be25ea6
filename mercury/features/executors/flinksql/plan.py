"""Compiled feature sets -> the Flink SQL the online-features job runs.

The statements read like the pipeline (docs/STREAMING.md, "The SQL job"):

    raw_<stream>        line, line_position, pt (proctime)  declared by the job's binding
    checked_<stream>    the line parsed once (JSON_FIELDS) and the contract's fast check
    judged_<stream>     the contract's Python validator on what the fast check did not pass
    valid_<stream>      every valid record: its JSON, its position, its tagged fields
    records_<stream>    typed columns; events_<stream>: identity, times, order, derived columns
    first_<stream>      the first arrival of each event id (Flink's deduplicate, keep first)
    counted_<stream>    what features count: not later than the lateness bound
    parts_<stream>      one row per part of a field an event updates: a tile's (feature,
                        bucket), a latest value's per-value, the entity's clock
    items_<set>_<f>     per last-N item, its first event time and ranked field values
    part_values         each part folded (COUNT/SUM/MIN/MAX, ordered picks)
    writes              each field as one JSON object of its parts (FIELD_JSON), for the
                        online store

and INSERTs into the sinks (dead letters, lake staging, late events, the online store). Only
two steps run Python: the validator, on the records the fast check leaves (malformed ones and
the odd escape), and the writer, on aggregated changes in batches (``writes``). Everything per
event (parsing, checks, dedup, lateness, tiles, latest, items) runs in Flink's own operators.

What the SQL must equal is ``mercury.features.executors.reference``; the notes beside each
part say which of its rules it implements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from mercury.contracts import registry
from mercury.durations import DAY_MS, parse_duration
from mercury.features.definition.columns import used_columns
from mercury.features.definition.dsl import Aggregate, FeatureSet, Filter, LastN, Latest
from mercury.features.definition.semantics import MAX_LATENESS_MS
from mercury.features.definition.transforms import MCC_CATEGORIES
from mercury.features.definition.windows import window
from mercury.features.executors.flinksql.contract import (
    StreamContract,
    compile_contract,
    sql_literal,
)
from mercury.features.executors.streaming.incremental import tile_retention

GROUP_SEP = "CHR(31)"   # tiles.SEP: between a feature and its bucket, and inside a bucket
PICK_SEP = "CHR(30)"    # between an ordering key and the value it orders
NO_GROUP = "'unknown'"  # tiles._NO_GROUP


@dataclass(frozen=True)
class Statement:
    """A view, or an INSERT into a sink. A ``shared`` view is computed once for all its
    readers: the planner would otherwise give each reader its own copy (each prunes its own
    columns), and parse, validate or deduplicate every line once per reader."""
    name: str
    sql: str
    kind: str  # "view" or "insert"
    shared: bool = False

    def text(self) -> str:
        if self.kind == "view":
            once = "-- computed once, shared by its readers\n" if self.shared else ""
            return f"{once}CREATE TEMPORARY VIEW {self.name} AS\n{self.sql}"
        return self.sql


@dataclass(frozen=True)
class JobPlan:
    streams: tuple[str, ...]
    statements: tuple[Statement, ...]

    def views(self) -> list[Statement]:
        return [s for s in self.statements if s.kind == "view"]

    def inserts(self) -> list[Statement]:
        return [s for s in self.statements if s.kind == "insert"]

    def explain(self) -> str:
        return ";\n\n".join(f"-- {s.name}\n{s.text()}" for s in self.statements) + ";\n"


def table_name(text: str) -> str:
    return text.replace(".", "_").replace("-", "_")


def _ttl_hint(table: str, ms: int) -> str:
    return f"/*+ STATE_TTL('{table}' = '{ms // 1000} s') */"


# ---- derived columns and filters --------------------------------------------------------------


def _mcc_category(mcc_code: str) -> str:
    whens = " ".join(f"WHEN {sql_literal(code)} THEN {sql_literal(label)}"
                     for code, label in sorted(MCC_CATEGORIES.items()))
    return f"CASE {mcc_code} {whens} ELSE 'other' END"


def _purchase_status(event_type: str, auth_decision: str, reversal_reason: str) -> str:
    return (f"CASE {event_type} "
            f"WHEN 'AUTH' THEN CASE WHEN {auth_decision} = 'DECLINED' THEN 'DECLINED' "
            f"ELSE 'PENDING' END "
            f"WHEN 'SETTLEMENT' THEN 'SETTLED' "
            f"WHEN 'REVERSAL' THEN CASE WHEN {reversal_reason} = 'CHARGEBACK' "
            f"THEN 'CHARGED_BACK' ELSE 'REVERSED' END END")


# transforms.FUNCTIONS in SQL; tests/flink/test_sql_contract.py holds each to its Python.
SQL_FUNCTIONS: dict[str, Callable[..., str]] = {"mcc_category": _mcc_category,
                                                "purchase_status": _purchase_status}



def filter_sql(condition: Filter) -> str:
    """``filters.holds`` in SQL (a null value equals nothing and differs from everything)."""
    column, op, value = condition.column, condition.op, condition.value
    if op == "eq":
        return f"{column} = {sql_literal(value)}"
    if op == "ne":
        return f"({column} IS NULL OR {column} <> {sql_literal(value)})"
    if op in ("in", "not_in"):
        values = ", ".join(sql_literal(v) for v in value)  # type: ignore[attr-defined]
        if op == "in":
            return f"{column} IN ({values})"
        return f"({column} IS NULL OR {column} NOT IN ({values}))"
    if op == "not_null":
        return f"{column} IS NOT NULL"
    if op == "is_null":
        return f"{column} IS NULL"
    raise ValueError(f"unknown filter op {op!r}")


def where_sql(conditions: Iterable[Filter], *more: str) -> str:
    parts = [filter_sql(c) for c in conditions] + list(more)
    return " AND ".join(parts) if parts else "TRUE"


# ---- one stream -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamPlan:
    """Validation, identity, dedup and lateness of one stream, for the sets that read it."""
    stream: str
    feature_sets: tuple[FeatureSet, ...]

    @cached_property
    def contract(self) -> StreamContract:
        return compile_contract(registry.stream(self.stream).schema_subject)

    @property
    def debezium(self) -> bool:
        return self.feature_sets[0].source.envelope == "debezium"

    @property
    def name(self) -> str:
        return table_name(self.stream)

    def columns(self) -> list[str]:
        """Every row column some feature of these sets reads, derived ones excluded."""
        derived = {d.name for fs in self.feature_sets for d in fs.source.derived}
        needed: set[str] = set()
        for fs in self.feature_sets:
            for d in fs.source.derived:
                needed.update(d.inputs)
            needed.update(used_columns(fs))
        return sorted(needed - derived)

    def statements(self) -> list[Statement]:
        s, contract = self.name, self.contract
        checked = Statement(f"checked_{s}", f"""SELECT line, line_position, pt, f,
  {contract.fast_check} AS fast
FROM raw_{s}, LATERAL TABLE(JSON_FIELDS(line)) AS parsed(f)""", "view", shared=True)
        judged = Statement(f"judged_{s}", f"""SELECT line_position, pt,
  validate_line({sql_literal(self.stream)}, line_position, line) AS v
FROM checked_{s} WHERE NOT fast""", "view", shared=True)
        valid = Statement(f"valid_{s}", f"""SELECT line_position, pt,
  {contract.clean_line} AS record_json, f
FROM checked_{s} WHERE fast
UNION ALL
SELECT line_position, pt, v.record AS record_json, v.fields AS f
FROM judged_{s} WHERE v.dead_letter IS NULL""", "view")
        return [checked, judged, valid, self._records(), self._events(), self._first(),
                self._counted()]

    def _records(self) -> Statement:
        """Every declared field as a typed column (nested ones by path: `after.user_id`)."""
        typed = ",\n  ".join(f"{self.contract.typed(c.name)} AS `{c.name}`"
                             for c in self.contract.columns)
        return Statement(f"records_{self.name}", f"""SELECT line_position, pt, record_json,
  {typed}
FROM valid_{self.name}""", "view")

    def _events(self) -> Statement:
        """``events.normalise``: identity, times, order and the row of each valid record."""
        s, names = self.name, {c.name for c in self.contract.columns}
        entity_key = self.feature_sets[0].entity.join_key
        if self.debezium:
            # A delete's row is its ``key`` (v2: nothing else) or ``before`` (v1), and its time
            # the commit's; else ``after`` and the row's business time (updated_at). Ordered
            # by the log position (lsn). As ``transforms.unwrap_debezium``.
            def column(name: str) -> str:
                old = (f"COALESCE(`key.{name}`, `before.{name}`)" if f"key.{name}" in names
                       else f"`before.{name}`")
                return f"CASE WHEN deleted THEN {old} ELSE `after.{name}` END"
            event_ts = ("CASE WHEN deleted THEN `source.ts_ms` ELSE `after.updated_at` END"
                        if "after.updated_at" in names else "`source.ts_ms`")
            inner = "SELECT *, `op` = 'd' AS deleted FROM records_" + s
            identity = [
                f"CAST({column(entity_key)} AS STRING) AS entity_id",
                f"CAST(`source.lsn` AS STRING) || ':' || CAST({column(entity_key)} AS STRING)"
                f" AS event_id",
                f"{event_ts} AS event_ts", f"{event_ts} AS arrival_ts",
                "LPAD(CAST(`source.lsn` AS STRING), 20, '0') AS order_key", "deleted"]
            row = [f"{column(c)} AS {c}" for c in self.columns()]
        else:
            spec = registry.stream(self.stream)
            event_id, event_ts = f"`{spec.event_id_field}`", f"`{spec.event_time_field}`"
            arrival = (f"CASE WHEN ingest_ts IS NULL OR ingest_ts = 0 THEN {event_ts} "
                       f"ELSE ingest_ts END" if "ingest_ts" in names else event_ts)
            inner = "SELECT * FROM records_" + s
            identity = [
                f"CAST(`{entity_key}` AS STRING) AS entity_id",
                f"{event_id} AS event_id", f"{event_ts} AS event_ts",
                f"{arrival} AS arrival_ts",  # ``record.get("ingest_ts") or event_ts``
                f"LPAD(CAST({event_ts} AS STRING), 20, '0') || {event_id} AS order_key",
                "FALSE AS deleted"]
            row = [f"`{c}`" for c in self.columns() if c not in ("event_id", "event_ts")]
        select = ",\n  ".join(["line_position", "pt", "record_json", *identity, *row])
        sql = f"""SELECT *, {self._derived()}
FROM (SELECT
  {select}
FROM ({inner}))
WHERE entity_id IS NOT NULL AND event_id IS NOT NULL AND event_ts IS NOT NULL"""
        return Statement(f"events_{s}", sql, "view")

    def _derived(self) -> str:
        derived = self.feature_sets[0].source.derived
        if not derived:
            return "1 AS no_derived_column"
        return ", ".join(f"{SQL_FUNCTIONS[d.function](*d.inputs)} AS {d.name}" for d in derived)

    def _first(self) -> Statement:
        """Effectively-once: the first arrival of an event id (``reference.first_arrivals``),
        kept for the dedup horizon (the job's state TTL)."""
        s = self.name
        return Statement(f"first_{s}", f"""SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY pt) AS arrival_rank
  FROM events_{s})
WHERE arrival_rank = 1""", "view", shared=True)

    def _counted(self) -> Statement:
        """``reference.counts``: too late means older than its own arrival by more than the
        lateness bound, a rule of the record alone (no watermark: no other record can move
        it, docs/STREAMING.md "Hostile time")."""
        s = self.name
        return Statement(f"counted_{s}", f"""SELECT * FROM first_{s}
WHERE event_ts >= arrival_ts - {MAX_LATENESS_MS}""", "view")

    def late(self) -> Statement:
        s = self.name
        return Statement(f"late_{s}", f"""INSERT INTO staged_late
SELECT '{{"stream":"{self.stream}","position":"' || line_position || '","watermark":'
  || CAST(arrival_ts - {MAX_LATENESS_MS} AS STRING) || ',"event_ts":' || CAST(event_ts AS STRING)
  || ',"record":' || record_json || '}}'
FROM first_{s} WHERE event_ts < arrival_ts - {MAX_LATENESS_MS}""", "insert")

    def sinks(self) -> list[Statement]:
        s = self.name
        dlq = table_name(str(registry.stream(self.stream).dead_letter_stream))
        return [
            Statement(f"dead_letters_{s}", f"""INSERT INTO dlq_{dlq}
SELECT v.dead_letter FROM judged_{s} WHERE v.dead_letter IS NOT NULL""", "insert"),
            Statement(f"validated_{s}", f"""INSERT INTO staged_validated
SELECT '{{"stream":"{self.stream}","position":"' || line_position
  || '","record":' || record_json || '}}'
FROM valid_{s}""", "insert"),
            self.late()]


# ---- features ---------------------------------------------------------------------------------


def retention_ms(fs: FeatureSet) -> int:
    """How long keyed state of a set must outlive its last update: a late event may still
    land in a tile that any window reads, or touch an item or a latest value."""
    longest = max([parse_duration(fs.ttl), *tile_retention(fs).values()])
    return longest + MAX_LATENESS_MS + DAY_MS


def _bucket(fs: FeatureSet, feature: Aggregate) -> str:
    """``tiles.bucket_of``: the group value and/or the amount's currency."""
    parts = []
    if feature.group_by is not None:
        parts.append(f"COALESCE(CAST({feature.group_by} AS STRING), {NO_GROUP})")
    currency = fs.source.currency_of(feature.column) if feature.column else None
    if currency is not None:
        parts.append(f"CAST({currency} AS STRING)")
    return f" || {GROUP_SEP} || ".join(parts) if parts else "''"


def _tile_index(hop: int) -> str:
    # floor division, as Python's //, also for times before 1970
    return (f"CASE WHEN event_ts >= 0 THEN event_ts / {hop} "
            f"ELSE (event_ts - {hop - 1}) / {hop} END")


def _padded(number: str) -> str:
    """A non-negative BIGINT as text that sorts as the number does."""
    return f"LPAD(CAST({number} AS STRING), 20, '0')"


@dataclass(frozen=True)
class Part:
    """One part of one online-store field that an event may update: a row of the fan-out.

    ``op`` says how the part's rows fold (``tiles.add`` for tiles; ``max_text``/``min_text``
    for ordered picks; ``exists`` for a distinct value, which is the part itself)."""
    keep: str              # SQL: whether this event updates the part
    target: str            # the set (or for a clock, the stream)
    kind: str              # t (tile), v (latest values), l (last-N items), c (clock)
    name: str              # SQL: which field of that kind (tile hop:index, feature name)
    part: str              # SQL: which part of the field
    op: str
    number: str = "CAST(NULL AS DOUBLE)"
    text: str = "CAST(NULL AS STRING)"

    def row(self) -> str:
        return (f"ROW({self.keep}, '{self.target}', '{self.kind}', CAST({self.name} AS STRING),\n"
                f"      CAST({self.part} AS STRING), '{self.op}', CAST({self.number} AS DOUBLE),\n"
                f"      CAST({self.text} AS STRING))")


def _tile_parts(fs: FeatureSet) -> list[Part]:
    """``incremental._add_to_tiles``: each aggregate feature, each hop of its windows."""
    parts = []
    for feature in fs.features:
        if not isinstance(feature, Aggregate):
            continue
        keep = where_sql(feature.where, *([f"{feature.column} IS NOT NULL"]
                                          if feature.column else []))
        key = f"'{feature.name}' || {GROUP_SEP} || {_bucket(fs, feature)}"
        for hop in sorted({window(text).hop_ms for text in feature.windows}):
            name = f"'{hop}:' || CAST({_tile_index(hop)} AS STRING)"
            if feature.op == "distinct_count":  # the value is part of the part: one per value
                parts.append(Part(keep, fs.ref, "t", name,
                                  f"{key} || CHR(29) || CAST({feature.column} AS STRING)",
                                  "exists"))
            else:
                number = feature.column or "1"
                parts.append(Part(keep, fs.ref, "t", name, key, feature.op, number=number))
    return parts


def _latest_parts(fs: FeatureSet) -> list[Part]:
    """``incremental._set_latest``: per per-value the event of greatest order (an older or
    equal one never overwrites), as [event_ts, deleted, expires, values...]."""
    parts = []
    for feature in fs.features:
        if not isinstance(feature, Latest):
            continue
        present = [] if feature.per is None else [f"{feature.per} IS NOT NULL"]
        per = "''" if feature.per is None else feature.per
        expires = feature.expires or "CAST(NULL AS BIGINT)"
        pick = (f"order_key || {PICK_SEP} || JSON_ARRAY(event_ts, deleted, {expires}, "
                f"{', '.join(feature.fields)} NULL ON NULL)")
        parts.append(Part(where_sql(feature.where, *present), fs.ref, "v",
                          f"'{feature.name}'", per, "max_text", text=pick))
    return parts


def _item_statements(stream: StreamPlan, ttl: int) -> list[Statement]:
    """``incremental._add_to_items``: per item its first event time and, per field, the value
    of its highest-ranked event that has one (rank, then event order, as ``materialize_items``
    ranks them), as one part of the list field: [ts, status pick, field picks...]. The writer
    keeps the newest ``n`` items."""
    statements = []
    for fs in stream.feature_sets:
        for feature in fs.features:
            if not isinstance(feature, LastN):
                continue
            ranks = " ".join(f"WHEN {sql_literal(status)} THEN {rank}"
                             for status, rank in feature.status_rank)
            rank_key = (f"LPAD(CAST(CASE {feature.status} {ranks} ELSE 0 END AS STRING), 4, '0')"
                        f" || order_key")
            picks = [f"MAX({rank_key} || {PICK_SEP} || JSON_ARRAY({feature.status} NULL ON NULL))"]
            picks += [f"MAX(CASE WHEN {c} IS NOT NULL THEN {rank_key} || {PICK_SEP} || "
                      f"JSON_ARRAY({c}) END)" for c in feature.fields]
            source = f"counted_{stream.name}"
            statements.append(Statement(
                f"items_{table_name(fs.ref)}_{feature.name}", f"""SELECT {_ttl_hint(source, ttl)}
  '{fs.ref}' AS target, entity_id, 'l' AS kind, '{feature.name}' AS name,
  CAST({feature.item_key} AS STRING) AS part,
  JSON_ARRAY(MIN(event_ts),
    {(','+chr(10)+'    ').join(picks)} NULL ON NULL) AS part_value,
  {feature.n} AS newest
FROM {source}
WHERE {where_sql(feature.where, f'{feature.item_key} IS NOT NULL')}
GROUP BY entity_id, {feature.item_key}""", "view"))
    return statements


def _parts_statement(stream: StreamPlan) -> Statement:
    """Every part an event of ``stream`` updates, in one pass over its counted events (one
    reader of them, so the planner builds the stream's chain once)."""
    parts = [p for fs in stream.feature_sets for p in (*_tile_parts(fs), *_latest_parts(fs))]
    # ``incremental.apply``'s clock: the newest event time folded in, capped by arrival.
    parts.append(Part("TRUE", stream.stream, "c", "''", "''", "max_text",
                      text=_padded("LEAST(event_ts, arrival_ts)")))
    rows = ",\n    ".join(p.row() for p in parts)
    return Statement(f"parts_{stream.name}", f"""SELECT
  u.target, entity_id, u.kind, u.name, u.part, u.op, u.num, u.txt
FROM counted_{stream.name} CROSS JOIN UNNEST(ARRAY[
    {rows}
  ]) AS u(keep, target, kind, name, part, op, num, txt)
WHERE u.keep""", "view")


# Each part's value as JSON text (``tiles.add`` per op; picks keep their order prefix).
_PART_VALUE = """CASE op
    WHEN 'count' THEN CAST(COUNT(*) AS STRING)
    WHEN 'sum' THEN CAST(SUM(num) AS STRING)
    WHEN 'min' THEN CAST(MIN(num) AS STRING)
    WHEN 'max' THEN CAST(MAX(num) AS STRING)
    WHEN 'avg' THEN '[' || CAST(SUM(num) AS STRING) || ',' || CAST(COUNT(*) AS STRING) || ']'
    WHEN 'exists' THEN '1'
    WHEN 'min_text' THEN MIN(txt)
    WHEN 'max_text' THEN MAX(txt)
  END"""


def _field_statements(streams: Sequence[StreamPlan], items: Sequence[Statement],
                      ttl: int) -> list[Statement]:
    """Parts fold per (target, entity, kind, name, part) (items per item, in their own
    views); a field is the JSON object of its parts (FIELD_JSON, infra/flink-udf; of a
    last-N field, its newest items only). One field aggregation for every kind, so one
    writer takes all the rows."""
    keys = "target, entity_id, kind, name"
    every_part = "\nUNION ALL\n".join(["SELECT * FROM part_values",
                                       *(f"SELECT * FROM {i.name}" for i in items)])
    return [
        Statement("parts", "\nUNION ALL\n".join(f"SELECT * FROM parts_{s.name}" for s in streams),
                  "view"),
        Statement("part_values", f"""SELECT {_ttl_hint('parts', ttl)}
  {keys}, part, {_PART_VALUE} AS part_value, 0 AS newest
FROM parts GROUP BY {keys}, part, op""", "view"),
        Statement("every_part", every_part, "view"),
        Statement("writes", f"""SELECT {_ttl_hint('every_part', ttl)}
  {keys}, FIELD_JSON(part, part_value, newest) AS payload
FROM every_part GROUP BY {keys}""", "view"),
        Statement("online_store", """INSERT INTO online_store
SELECT write_online(target, entity_id, kind, name, payload) FROM writes""", "insert")]


def compile_job(feature_sets: Sequence[FeatureSet]) -> JobPlan:
    by_stream: dict[str, list[FeatureSet]] = {}
    for fs in feature_sets:
        by_stream.setdefault(fs.source.stream, []).append(fs)
    streams = []
    for name, sets in sorted(by_stream.items()):
        keys = {fs.entity.join_key for fs in sets}
        if len(keys) > 1:
            raise ValueError(f"{name}: sets of one stream must share an entity key, "
                             f"got {sorted(keys)} (one dedup and identity per stream)")
        streams.append(StreamPlan(name, tuple(sets)))
    # One state TTL for every part (per-operator TTLs would split the chain, see
    # docs/STREAMING.md "The SQL job"): the longest any set needs.
    ttl = max(retention_ms(fs) for fs in feature_sets)
    statements: list[Statement] = []
    items: list[Statement] = []
    for stream in streams:
        stream_items = _item_statements(stream, ttl)
        statements += [*stream.statements(), _parts_statement(stream), *stream_items]
        items += stream_items
    statements += _field_statements(streams, items, ttl)
    for stream in streams:
        statements += stream.sinks()
    return JobPlan(tuple(s.stream for s in streams), tuple(statements))

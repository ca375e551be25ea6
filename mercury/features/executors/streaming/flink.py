"""The PyFlink executor: the online-features pipeline over the streams' raw lines.

    raw lines (+ stream, position) --validate--> dead letters  (per stream, to its .dlq stream)
                                  \\-> validated records          (to the lake's staging area)
                                  \\-> routed events --event-time watermarks--> key by entity
        --OnlineFeatures (keyed state: dedup, tiles, lists, latest)--> Redis (whole-field writes)
                                                                  \\-> late events (lake)

``build`` is the whole graph and knows no connector: the job's ``main`` declares sources and
sinks (see flink_jobs/online_features.py). All feature logic is in
``mercury.features.executors.streaming.executor``; the functions here only adapt it to Flink.

Warm-started versions (``warm_start_refs``, see ``mercury.features.lifecycle.warm_start``): the
keyed operator reads each one's seam (cut and bootstrap loader) from the online store when it opens,
and fails to open if that version was not warm-started: a version is never silently streamed from
empty state on top of a backfill.

Exactly-once where it matters: Redis writes happen inside ``process_element``, so every write
of an event precedes the next checkpoint barrier; after a restore Flink replays from that
checkpoint and the writes, being whole-field overwrites from restored state, end identical.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import orjson
from pyflink.common import Duration, Row, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction
from pyflink.datastream.state import ValueStateDescriptor

from mercury.features.definition.semantics import MAX_LATENESS_MS

if TYPE_CHECKING:
    # pyflink ships no types (and is not in the main env): these are ``Any`` to mypy, named
    # for the reader.
    from pyflink.datastream import DataStream, RuntimeContext
    from pyflink.datastream.state import ValueState

    from mercury.features.executors.streaming.executor import OnlineExecutor
    from mercury.online.store import OnlineStore

OUT_OF_ORDERNESS_MS = 10 * 60_000  # producers' clock skew and cross-region ingestion bound

LINE = Types.ROW_NAMED(["stream", "line", "path", "line_number"],
                       [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG()])
ROUTED = Types.ROW_NAMED(["key", "stream", "record", "event_ts", "position"],
                         [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(),
                          Types.STRING()])
TAGGED = Types.ROW_NAMED(["stream", "json"], [Types.STRING(), Types.STRING()])

DEAD_LETTERS = OutputTag("dead-letters", TAGGED)
VALIDATED = OutputTag("validated", TAGGED)
LATE = OutputTag("late-events", TAGGED)


class ValidateAndRoute(ProcessFunction):
    """Contract check of each raw line; bad ones become dead letters with their position."""

    def __init__(self, specs_json: str) -> None:
        self.specs_json = specs_json

    def open(self, runtime_context: RuntimeContext) -> None:
        from mercury.contracts import registry
        from mercury.contracts.validation import validator
        from mercury.quality.dead_letters import make_dead_letter

        self.make_dead_letter = make_dead_letter
        self.executor = _executor(self.specs_json)
        self.validators = {s: validator(registry.stream(s).schema_subject)
                           for s in self.executor.streams}
        metrics = runtime_context.get_metrics_group()
        self.dead_letters = metrics.counter("dead_letters")
        self.unknown_fields = metrics.counter("records_with_unknown_fields")
        self.dropped_fields = metrics.counter("sensitive_fields_dropped")

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Iterator[Any]:
        stream, line = value.stream, value.line
        position = f"{stream}/{os.path.basename(value.path)}:{value.line_number}"
        raw = line.encode()
        verdict = self.validators[stream].validate_bytes(raw)
        if not verdict.ok:
            self.dead_letters.inc()
            letter = self.make_dead_letter(stream, position, raw, verdict,
                                      ctx.timer_service().current_processing_time())
            yield DEAD_LETTERS, Row(stream, orjson.dumps(letter).decode())
            return
        if verdict.unknown_fields:
            self.unknown_fields.inc()
        if verdict.dropped_fields:  # the record below is already without them
            self.dropped_fields.inc(len(verdict.dropped_fields))
        record = orjson.dumps(verdict.record).decode()
        yield VALIDATED, Row(stream, orjson.dumps(
            {"stream": stream, "position": position, "record": verdict.record}).decode())
        valid = cast("dict[str, Any]", verdict.record)  # an ok verdict carries its record
        for key, event_ts in self.executor.route(stream, valid):
            yield Row(key, stream, record, event_ts, position)


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value: Row, record_timestamp: int) -> int:
        event_ts: int = value.event_ts
        return event_ts


class FlinkState:
    """``StateAccess`` over this key's ValueStates (cached in the Python worker)."""

    def __init__(self, states: dict[str, ValueState]) -> None:
        self.states = states

    def get(self, name: str) -> Any:
        return self.states[name].value()

    def put(self, name: str, value: Any) -> None:
        self.states[name].update(value)


class OnlineFeatures(KeyedProcessFunction):
    """Keyed by entity: dedup, feature state, and the writes to the online store."""

    def __init__(self, specs_json: str, store_json: str, warm_start_json: str = "[]") -> None:
        self.specs_json = specs_json
        self.store_json = store_json
        self.warm_start_json = warm_start_json

    def open(self, runtime_context: RuntimeContext) -> None:
        from pydantic import TypeAdapter

        from mercury.config import OnlineStoreConfig
        from mercury.online.factory import open_store

        self.store = open_store(TypeAdapter(OnlineStoreConfig).validate_json(self.store_json))
        self.executor = _executor(self.specs_json, self.store, orjson.loads(self.warm_start_json))
        self.state = FlinkState({
            name: runtime_context.get_state(ValueStateDescriptor(name, Types.PICKLED_BYTE_ARRAY()))
            for name in self.executor.state_names()})
        metrics = runtime_context.get_metrics_group()
        self.duplicates = metrics.counter("duplicates")
        self.late = metrics.counter("late_events")
        self.applied = metrics.counter("events_applied")

    def process_element(self, value: Row,
                        ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        watermark = ctx.timer_service().current_watermark()
        if value.event_ts < watermark - MAX_LATENESS_MS:
            self.late.inc()
            yield LATE, Row(value.stream, orjson.dumps(
                {"stream": value.stream, "position": value.position, "watermark": watermark,
                 "event_ts": value.event_ts, "record": orjson.loads(value.record)}).decode())
            return
        outcome = self.executor.process(value.key, value.stream, orjson.loads(value.record),
                                        self.state, ctx.timer_service().current_processing_time())
        if outcome.duplicate:
            self.duplicates.inc()
            return
        self.store.write(outcome.writes)
        self.applied.inc()

    def close(self) -> None:
        self.store.close()


def _executor(specs_json: str, store: OnlineStore | None = None,
              warm_start_refs: Collection[str] = ()) -> OnlineExecutor:
    from mercury.features.definition.dsl import feature_set_from_dict
    from mercury.features.executors.streaming.executor import OnlineExecutor

    feature_sets = [feature_set_from_dict(d) for d in orjson.loads(specs_json)]
    seams = {}
    if warm_start_refs:
        from mercury.features.lifecycle import warm_start

        by_ref = {fs.ref: fs for fs in feature_sets}
        unknown = sorted(set(warm_start_refs) - set(by_ref))
        if unknown:
            raise ValueError(f"warm-started sets the job does not run: {unknown}")
        seams = {ref: warm_start.seam(store, by_ref[ref]) for ref in warm_start_refs}
    return OnlineExecutor(feature_sets, seams=seams)


def build(lines: DataStream, feature_sets_json: str, store_json: str,
          warm_start_refs: Iterable[str] = ()) -> tuple[DataStream, DataStream, DataStream]:
    """lines (a DataStream of LINE rows) -> (dead letters, validated, late) tagged streams.

    The Redis writes happen inside the keyed operator; the three returned streams carry
    (stream, json) rows for the job's sinks. ``warm_start_refs``: set refs (``spending.v2``)
    that take over from their warm start at its cut.
    """
    routed = lines.process(ValidateAndRoute(feature_sets_json), output_type=ROUTED) \
        .name("validate-and-route")
    watermarks = WatermarkStrategy \
        .for_bounded_out_of_orderness(Duration.of_millis(OUT_OF_ORDERNESS_MS)) \
        .with_timestamp_assigner(EventTime())
    features = routed.assign_timestamps_and_watermarks(watermarks) \
        .key_by(lambda row: row.key, key_type=Types.STRING()) \
        .process(OnlineFeatures(feature_sets_json, store_json,
                                orjson.dumps(list(warm_start_refs)).decode()),
                 output_type=TAGGED) \
        .name("online-features")
    return (routed.get_side_output(DEAD_LETTERS), routed.get_side_output(VALIDATED),
            features.get_side_output(LATE))

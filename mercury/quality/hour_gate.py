"""The hourly promotion gate: profile a stream's arrival hour, judge it, record the verdict.

Promotion of an hour means: its row in the ledger (``mercury.quality.quarantine``) says
``promoted`` or ``released``. ``promote_hour`` is the promoting step (the ``quality_gate``
DAG runs it for each gated stream and closed hour): it reads what arrived in the hour,
runs the rules of ``mercury.quality.anomaly`` against the earlier promoted hours, records
the verdict, and raises ``HourQuarantined`` naming the rules when the hour is held, so the
task fails and alerts. Consumers of an hour ask ``require_promoted`` first. The ledger's
state goes to a Prometheus textfile after each verdict (``write_metrics``).

An hour is by arrival (``ingest_ts``), not event time: an event-time hour keeps receiving
late events for days and is never complete, an arrival hour is complete when it closes, and
its late share is itself one of the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mercury.quality import quarantine
from mercury.quality.anomaly import Verdict, evaluate, history_hours
from mercury.quality.hour_profile import HOUR_MS, hour_start, profile_hour

if TYPE_CHECKING:
    from psycopg import Connection

    from mercury.config import Settings

METRICS_FILE = "quality_gate.prom"  # in settings.metrics_dir


class HourQuarantined(Exception):
    """The hour broke a rule and is held from promotion; the message names the rules."""

    def __init__(self, stream: str, hour_ms: int, breaches: list[dict]):
        self.stream, self.hour_ms, self.breaches = stream, hour_ms, breaches
        rules = "; ".join(breach_line(b) for b in breaches)
        super().__init__(f"{stream} hour {hour_label(hour_ms)} is quarantined: {rules}. "
                         f"After checking it, release it with `mercury quality release "
                         f"--stream {stream} --hour {hour_label(hour_ms)} --reason ...`")


@dataclass(frozen=True)
class GateResult:
    verdict: Verdict
    status: str  # promoted | quarantined | released (a released hour stays released)

    @property
    def promoted(self) -> bool:
        return self.status != quarantine.QUARANTINED


def breach_line(breach: dict) -> str:
    """``psi(currency): PSI 0.61 ...`` from a stored breach."""
    column = breach.get("column")
    return f"{breach['rule']}{f'({column})' if column else ''}: {breach['detail']}"


def hour_label(hour_ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%Y-%m-%dT%H:00Z")


def gate_hour(settings: Settings, stream: str, hour_ms: int,
              records: Iterable[dict]) -> GateResult:
    """Judge the validated records that arrived in the hour and record the verdict."""
    config = settings.anomaly
    if stream not in config.streams:
        raise ValueError(f"stream {stream!r} is not gated: anomaly.streams is "
                         f"{', '.join(config.streams)}")
    profile = profile_hour(stream, hour_ms, records, config.categorical.get(stream, ()),
                           config.numeric.get(stream, ()), config.late_after_ms)
    with quarantine.connect(settings) as conn:
        history = quarantine.baseline_profiles(conn, settings, stream,
                                               history_hours(hour_ms, config))
        verdict = evaluate(profile, history, config)
        status = quarantine.record(conn, settings, verdict, profile)
        write_metrics(conn, settings)
    return GateResult(verdict, status)


def promote_hour(settings: Settings, stream: str, hour_ms: int) -> GateResult:
    """The promoting step: gate the hour from the event log; raise if it is held."""
    result = gate_hour(settings, stream, hour_ms, arrived_in(settings, stream, hour_ms))
    if not result.promoted:
        raise HourQuarantined(stream, hour_ms, result.verdict.breaches_json())
    return result


def require_promoted(settings: Settings, stream: str, hour_ms: int) -> None:
    """What a consumer of an hour checks first: raise unless it was promoted or released."""
    with quarantine.connect(settings) as conn:
        found = quarantine.get(conn, settings, stream, hour_ms)
    if found is None:
        raise LookupError(f"{stream} hour {hour_label(hour_ms)} has not been gated yet")
    if found.status == quarantine.QUARANTINED:
        raise HourQuarantined(stream, hour_ms, found.breaches)


def release_hour(settings: Settings, stream: str, hour_ms: int, reason: str,
                 released_by: str) -> quarantine.HourRecord:
    """The documented override: promote a quarantined hour, recording who and why."""
    with quarantine.connect(settings) as conn:
        done = quarantine.release(conn, settings, stream, hour_ms, reason, released_by)
        write_metrics(conn, settings)
    return done


def arrived_in(settings: Settings, stream: str, hour_ms: int) -> Iterator[dict]:
    """Validated records of the stream whose ``ingest_ts`` lies in the hour. Reads the
    stream from its start as a group that never commits (the file log locally; on Kafka the
    retention bounds how far back an hour can be gated). Invalid records are the dead-letter
    path's business, not this gate's."""
    from mercury.contracts import registry
    from mercury.contracts.validation import validator
    from mercury.eventlog import open_consumer, writer_schemas

    if hour_ms % HOUR_MS:
        raise ValueError(f"hour {hour_ms} is not the start of an hour")
    check = validator(registry.stream(stream).schema_subject)
    schemas_by_id = writer_schemas(settings)
    consumer = open_consumer(settings, f"quality-gate.{stream}.{hour_ms}", [stream])
    try:
        for batch in consumer.read_to_end(max_messages=50_000):
            for message in batch:
                verdict = check.validate_bytes(message.value, schemas_by_id)
                if verdict.ok and verdict.record is not None and \
                        hour_start(verdict.record.get("ingest_ts", -1)) == hour_ms:
                    yield verdict.record
    finally:
        consumer.close()


def write_metrics(conn: Connection, settings: Settings) -> None:
    """The ledger's state as Prometheus gauges in ``<data_dir>/metrics/quality_gate.prom``
    (the node exporter's textfile collector format; written whole, then renamed):
    ``mercury_quality_quarantined_hours{stream}`` (the alert) and
    ``mercury_quality_quarantine_breaches{stream,rule}`` (which rules hold them)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    hours = Gauge("mercury_quality_quarantined_hours",
                  "Arrival hours held from promotion by the anomaly gate", ["stream"],
                  registry=registry)
    rules = Gauge("mercury_quality_quarantine_breaches",
                  "Rule breaches of the quarantined hours", ["stream", "rule"],
                  registry=registry)
    for stream in settings.anomaly.streams:
        hours.labels(stream).set(0)  # a stream with nothing held reads 0, not absent
    for held in quarantine.quarantined(conn, settings):
        hours.labels(held.stream).inc()
        for breach in held.breaches:
            rules.labels(held.stream, breach["rule"]).inc()
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(settings.metrics_dir / METRICS_FILE), registry)

"""Feature history tables held to the reference executor, and recomputed only where they can change.

A private lake gets an adversarial stream from the generator (duplicates, out-of-order and late
arrivals, schema-evolved records) plus a hand-made producer retry and a malformed record that
validation keeps out of the lake, loaded in two batches. ``history.backfill`` computes three
sets over 17 days: ``declines.v1`` (aggregates, longest window 7d), ``spending.v1``
(aggregates, 30d) and ``risk.v1`` (a ``Latest`` with max age and expiry, plus counts). Every
stored row must equal ``reference.values_for`` on the raw arrivals for that entity as of that
day's last millisecond, and every entity the reference omits must have no row. A second run
with no lake change computes nothing; a late chargeback and a late decline (arrival day X,
event day X-3) recompute exactly the days from X to the end of the longest window (declines)
or to the end of the range (spending, risk), leave the other days' rows byte-identical, and the
history still equals the reference afterwards. Lake files rewritten with the same rows
(compaction) recompute nothing; a run that loses the commit race plans again; ``--full`` and a
changed definition force days; the job rejects an unknown set and a bad range before Spark.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import orjson
import pytest

from mercury.durations import DAY_MS, HOUR_MS
from mercury.features.definition.compile import load_compiled
from mercury.features.executors.agreement import same
from mercury.features.executors.events import normalise
from mercury.features.executors.reference import valid_record, values_for
from mercury.features.offline import history
from tests.conftest import write_config
from tests.spark_fixtures import spark  # noqa: F401 (the session-scoped fixture)

SETS = {fs.ref: fs for fs in load_compiled(["declines.v1", "spending.v1", "risk.v1"])}
START, END = date(2026, 10, 31), date(2026, 11, 16)  # the stream spans Nov 1..10, late to ~14
LATE_ARRIVAL_DAY = date(2026, 11, 9)  # day X
LATE_EVENT_DAY = LATE_ARRIVAL_DAY - timedelta(days=3)


def events_of(feature_set, records):
    return [e for r in records if (e := normalise(feature_set, r)) is not None]


def malformed_transaction(template: dict) -> bytes:
    bad = dict(template, event_id=str(uuid.uuid4()), amount="twelve")  # a string amount
    return json.dumps(bad).encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Settings of a private lake holding the valid records; records per stream in arrival
    order (the oracle's input, retries included)."""
    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventReader
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from mercury.lake import tables

    tmp = tmp_path_factory.mktemp("history_world")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(write_config(tmp)))
        settings = load_settings()
        generate(settings, Knobs(events=1_500, users=12, documents=0, span_ms=10 * DAY_MS),
                 with_postgres=False, show_progress=False)
    reader = FileEventReader(settings.event_log.root)
    records: dict[str, list[dict]] = {}
    for stream in ("transactions", "risk_signals"):
        payloads = [m.value for m in reader.read(stream)]
        if stream == "transactions":
            first = valid_record(stream, payloads[0])
            retry = dict(first, amount=first["amount"] + 1000.0,
                         ingest_ts=first["ingest_ts"] + 2 * HOUR_MS)
            payloads.append(json.dumps(retry).encode())  # a producer retry: must not win
            payloads.insert(len(payloads) // 2, malformed_transaction(first))
        valid = [valid_record(stream, p) for p in payloads]
        assert any(v is None for v in valid), f"{stream}: no malformed record to drop"
        records[stream] = [v for v in valid if v is not None]
        half = len(records[stream]) // 2
        tables.upsert(settings, stream, records[stream][:half])  # two batches, two snapshots
        tables.upsert(settings, stream, records[stream][half:])
    return settings, records


def reference_by_day(feature_set, records) -> dict[date, dict[str, dict]]:
    events = events_of(feature_set, records)
    return {day: values_for(feature_set, events, history.day_end_ms(day))
            for day in history.days_in(START, END)}


def mismatches(feature_set, stored, expected: dict[date, dict[str, dict]]) -> list[str]:
    found: list[str] = []
    got: dict[date, dict[str, dict]] = {}
    for row in stored.to_pylist():
        assert row["as_of_ms"] == history.day_end_ms(row["as_of_date"])
        got.setdefault(row["as_of_date"], {})[row["entity_id"]] = \
            history.decode_row(feature_set, row)
    for day, want in expected.items():
        have = got.get(day, {})
        for entity in sorted(want.keys() | have.keys()):
            if entity not in have or entity not in want:
                found.append(f"{day} {entity}: stored={entity in have} reference="
                             f"{entity in want}")
                continue
            for name, value in want[entity].items():
                if not same(have[entity][name], value):
                    found.append(f"{day} {entity} {name}: stored={have[entity][name]!r} "
                                 f"reference={value!r}")
    return found


@pytest.fixture(scope="module")
def first_runs(spark, world):  # noqa: F811
    settings, _ = world
    return {ref: history.backfill(spark, settings, fs, START, END) for ref, fs in SETS.items()}


def by_day(table) -> dict[date, list[dict]]:
    rows: dict[date, list[dict]] = {}
    for row in table.to_pylist():
        rows.setdefault(row["as_of_date"], []).append(row)
    return rows


# ---- tests -----------------------------------------------------------------------------------

def test_the_stream_is_adversarial_and_the_lake_keeps_the_first_arrival(world):
    settings, records = world
    from mercury.lake import tables

    txs = records["transactions"]
    ids = [r["event_id"] for r in txs]
    assert len(ids) > len(set(ids))  # duplicates
    assert any(r["ingest_ts"] - r["event_ts"] > HOUR_MS for r in txs)  # late arrivals
    assert [r["event_ts"] for r in txs] != sorted(r["event_ts"] for r in txs)  # out of order
    lake = tables.read(settings, "transactions")
    assert lake.num_rows == len(set(ids))  # the malformed record never arrived; one per id
    first = txs[0]
    stored = [r for r in lake.to_pylist() if r["event_id"] == first["event_id"]]
    assert stored[0]["amount"] == first["amount"]  # not the retry's


def test_history_equals_the_reference_for_every_entity_and_day(world, first_runs):
    settings, records = world
    for ref, fs in SETS.items():
        result = first_runs[ref]
        assert result.days_written == len(history.days_in(START, END))
        assert result.reasons == {history.NEW: result.days_written}
        stored = history.read(settings, fs)
        assert result.rows_written == stored.num_rows > 0
        expected = reference_by_day(fs, records[fs.source.stream])
        assert not mismatches(fs, stored, expected), ref
        assert expected[START] == {}  # before the stream: no entity has a row
        assert START not in by_day(stored)
        # Some entity is absent on some day while present later: the grid is not a cross product.
        counts = [len(expected[d]) for d in history.days_in(START, END)]
        assert counts != sorted(counts, reverse=True) or len(set(counts)) > 1


def test_the_table_is_named_partitioned_and_typed(world, first_runs):
    from mercury.lake.tables import catalog

    settings, _ = world
    fs = SETS["risk.v1"]
    identifier = history.table_identifier(settings, fs)
    assert identifier == f"{settings.offline.namespace}.risk_v1"
    table = catalog(settings).load_table(identifier)
    assert [f.name for f in table.schema().fields] == [
        "entity_id", "as_of_date", "as_of_ms", "flags", "signals", "computed_at"]
    (partition,) = table.spec().fields
    assert (partition.name, str(partition.transform)) == ("as_of_date", "identity")
    row = history.read(settings, fs, START + timedelta(days=5),
                       START + timedelta(days=5)).to_pylist()[0]
    assert row["signals"] == orjson.dumps(orjson.loads(row["signals"]),
                                          option=orjson.OPT_SORT_KEYS).decode()


def test_a_second_run_without_lake_changes_computes_nothing(spark, world, first_runs):  # noqa: F811
    from mercury.lake.tables import catalog

    settings, _ = world
    for ref, fs in SETS.items():
        table = catalog(settings).load_table(history.table_identifier(settings, fs))
        before = table.current_snapshot().snapshot_id
        result = history.backfill(spark, settings, fs, START, END)
        assert (result.days_written, result.rows_written) == (0, 0), ref
        assert result.days_skipped == len(history.days_in(START, END))
        table = catalog(settings).load_table(history.table_identifier(settings, fs))
        assert table.current_snapshot().snapshot_id == before  # not even an empty commit


def late_events(records: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """A chargeback and a decline for an existing user, and a risk flag: each arrives on day
    X at 10:00 but happened on day X-3 at 12:00."""
    txs, signals = records["transactions"], records["risk_signals"]
    arrival = history.day_start_ms(LATE_ARRIVAL_DAY) + 10 * HOUR_MS
    event_ts = history.day_start_ms(LATE_EVENT_DAY) + 12 * HOUR_MS
    user = txs[0]["user_id"]
    assert min(r["event_ts"] for r in txs if r["user_id"] == user) < event_ts  # present before
    chargeback = dict(txs[0], event_id=str(uuid.uuid4()), event_type="REVERSAL",
                      auth_decision=None, reversal_reason="CHARGEBACK", amount=77.0,
                      event_ts=event_ts, ingest_ts=arrival)
    decline = dict(txs[0], event_id=str(uuid.uuid4()), event_type="AUTH",
                   auth_decision="DECLINED", decline_reason="INSUFFICIENT_FUNDS",
                   purchase_id=f"pur_{uuid.uuid4().hex[:8]}", event_ts=event_ts + 1,
                   ingest_ts=arrival + 1)
    flagged = next(r for r in signals if r["signal_type"] != "CLEARED")
    flag = dict(flagged, event_id=str(uuid.uuid4()), user_id=user, signal_type="FRAUD_FLAG",
                severity="CRITICAL", event_ts=event_ts, ingest_ts=arrival, expires_ts=None)
    for record in (chargeback, decline):
        assert valid_record("transactions", json.dumps(record).encode()) is not None
    assert valid_record("risk_signals", json.dumps(flag).encode()) is not None
    return {"transactions": [chargeback, decline], "risk_signals": [flag]}


def expected_days(feature_set) -> list[date]:
    """Days X.. the end of the range, or, for an aggregates-only set, while the late events'
    day X-3 is still inside its longest window."""
    arrival = history.day_start_ms(LATE_ARRIVAL_DAY) + 10 * HOUR_MS
    event_ts = history.day_start_ms(LATE_EVENT_DAY) + 12 * HOUR_MS
    longest = history.longest_window_ms(feature_set)
    return [d for d in history.days_in(START, END)
            if history.day_end_ms(d) >= arrival
            and (longest is None or history.day_start_ms(d) < event_ts + 1 + longest)]


def test_late_events_recompute_only_the_days_they_can_change(spark, world, first_runs):  # noqa: F811
    from mercury.lake import tables

    settings, records = world
    before = {ref: by_day(history.read(settings, fs)) for ref, fs in SETS.items()}
    reference_before = {ref: reference_by_day(fs, records[fs.source.stream])
                        for ref, fs in SETS.items()}
    late = late_events(records)
    for stream, rows in late.items():
        (was, _), _ = tables.snapshot_ids(settings, stream), tables.upsert(settings, stream, rows)
        now, _ = tables.snapshot_ids(settings, stream)
        assert tables.touched_days(settings, stream, was, now) == {LATE_EVENT_DAY}
        records[stream] = records[stream] + rows  # the oracle sees them arrive last
    assert expected_days(SETS["declines.v1"])[-1] < END  # the window bound shows in the range

    for ref, fs in SETS.items():
        lines: list[str] = []
        result = history.backfill(spark, settings, fs, START, END, progress=lines.append)
        assert any("1 touched day(s) to diff" in line for line in lines), lines
        want = expected_days(fs)
        assert want[0] == LATE_ARRIVAL_DAY
        assert result.reasons == {history.CHANGED: len(want)}, ref
        after = by_day(history.read(settings, fs))
        rewritten = [d for d in history.days_in(START, END)
                     if before[ref].get(d) != after.get(d)]
        (first_computed,) = {r["computed_at"] for rows in before[ref].values() for r in rows}
        computed_again = sorted({r["as_of_date"] for rows in after.values() for r in rows
                                 if r["computed_at"] != first_computed})
        assert computed_again == want, ref
        assert set(rewritten) <= set(want)
        for day in history.days_in(START, END):
            if day not in want:
                assert before[ref].get(day) == after.get(day), (ref, day)  # byte-identical
        expected = reference_by_day(fs, records[fs.source.stream])
        assert not mismatches(fs, history.read(settings, fs), expected), ref
        # Bitemporal: the days between the event and its arrival do not change, in the
        # reference as in the history; day X does.
        for day in history.days_in(LATE_EVENT_DAY, LATE_ARRIVAL_DAY - timedelta(days=1)):
            assert expected[day] == reference_before[ref][day]
        assert expected[LATE_ARRIVAL_DAY] != reference_before[ref][LATE_ARRIVAL_DAY], ref


def test_rewritten_lake_files_without_changed_rows_recompute_nothing(spark, world,  # noqa: F811
                                                                     first_runs):
    """Compaction-like: a lake day's files are replaced by the same rows. The files say the day
    was touched; the rows say nothing changed, so no history day is computed, and every day's
    record moves to the new lake snapshot."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    from mercury.lake import tables
    from mercury.lake.tables import catalog

    settings, _ = world
    fs = SETS["declines.v1"]
    history.backfill(spark, settings, fs, START, END)  # whatever came before is reflected
    lake = catalog(settings).load_table("raw.transactions")
    day = date(2026, 11, 4)
    where = And(GreaterThanOrEqual("event_ts", f"{day.isoformat()}T00:00:00+00:00"),
                LessThan("event_ts", f"{(day + timedelta(days=1)).isoformat()}T00:00:00+00:00"))
    rows = lake.scan(row_filter=where).to_arrow()
    assert rows.num_rows > 0
    was, _ = tables.snapshot_ids(settings, "transactions")
    lake.overwrite(rows, overwrite_filter=where)
    now, _ = tables.snapshot_ids(settings, "transactions")
    assert tables.touched_days(settings, "transactions", was, now) == {day}
    result = history.backfill(spark, settings, fs, START, END)
    assert (result.days_written, result.source_snapshot_id) == (0, now)
    table = catalog(settings).load_table(history.table_identifier(settings, fs))
    assert set(history.recorded_days(table.properties).values()) == {str(now)}


def test_changed_spans_cover_a_new_entitys_presence_beyond_the_window():
    from mercury.features.executors.events import FeatureEvent

    fs = SETS["declines.v1"]
    t = history.day_start_ms(date(2026, 11, 2)) + HOUR_MS
    old = [FeatureEvent("u1", "e1", t, t, (t, "e1"), {"event_type": "AUTH"})]
    new = old + [FeatureEvent("u2", "e2", t, t + DAY_MS, (t, "e2"), {"event_type": "AUTH"})]
    spans = history.changed_spans(fs, old, new)
    assert (date(2026, 11, 3), date(2026, 11, 9)) in spans  # until it leaves the 7d window
    assert (date(2026, 11, 3), None) in spans  # u2 has a row on every later day
    assert history.in_spans(date(2027, 1, 1), spans)
    assert not history.in_spans(date(2026, 11, 2), spans)  # before it arrived
    # An existing entity's event only matters inside the window.
    more = old + [FeatureEvent("u1", "e3", t, t + DAY_MS, (t, "e3"), {"event_type": "AUTH"})]
    assert history.changed_spans(fs, old, more) == [(date(2026, 11, 3), date(2026, 11, 9))]
    # An event too late to ever count changes nothing.
    too_late = old + [FeatureEvent("u1", "e4", t, t + 40 * DAY_MS, (t, "e4"), {})]
    assert history.changed_spans(fs, old, too_late) == []


def test_the_job_rejects_an_unknown_set_and_a_bad_range(world, capsys, monkeypatch):
    from spark_jobs import backfill as job

    settings, _ = world
    config = str(settings.data_dir.parent / "mercury.yaml")
    monkeypatch.setenv("MERCURY_CONFIG", config)  # restored after: main sets it from --config
    assert job.main(["--feature-set", "nosuch.v1", "--start", "2026-11-01",
                     "--end", "2026-11-02", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "nosuch.v1" in err and "not a compiled feature set" in err
    assert job.main(["--feature-set", "spending.v1", "--start", "2026-11-05",
                     "--end", "2026-11-01", "--config", config]) == 2
    assert "--end is before --start" in capsys.readouterr().err
    assert job.main(["--feature-set", "spending.v1", "--start", "2026-13-01",
                     "--end", "2026-11-01", "--config", config]) == 2
    assert "'2026-13-01' is not a date" in capsys.readouterr().err


def test_the_job_reports_what_it_computes_and_why(spark, world, first_runs, capsys,  # noqa: F811
                                                   monkeypatch):
    """``--full`` recomputes days that had not changed: same bytes, a new ``computed_at``."""
    from spark_jobs import backfill as job

    settings, _ = world
    fs = SETS["declines.v1"]
    config = str(settings.data_dir.parent / "mercury.yaml")
    monkeypatch.setenv("MERCURY_CONFIG", config)  # restored after: main sets it from --config
    before = by_day(history.read(settings, fs))
    assert job.main(["--feature-set", "declines.v1", "--start", "2026-11-15",
                     "--end", "2026-11-17", "--full", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "to compute: 3 (2 forced, 1 new)" in out
    assert "2026-11-15..2026-11-16: forced" in out and "2026-11-17: new" in out
    assert "declines.v1 2026-11-15..2026-11-17: 3 day(s) written" in out
    after = by_day(history.read(settings, fs))
    names = [f.name for f in fs.features]
    for day in (date(2026, 11, 15), date(2026, 11, 16)):
        assert [[r[k] for k in ("entity_id", "as_of_ms", *names)] for r in after[day]] == \
            [[r[k] for k in ("entity_id", "as_of_ms", *names)] for r in before[day]]
        assert after[day][0]["computed_at"] > before[day][0]["computed_at"]
    assert len(after[date(2026, 11, 17)]) == len(after[date(2026, 11, 16)])  # all still present


def test_a_run_that_loses_the_commit_race_plans_again(spark, world, first_runs):  # noqa: F811
    from pyiceberg.expressions import EqualTo

    from mercury.lake.tables import catalog

    settings, _ = world
    fs = SETS["declines.v1"]
    lines: list[str] = []
    other = date(2026, 11, 16)
    other_rows = history.read(settings, fs, other, other)

    def progress(line: str) -> None:
        lines.append(line)
        if len(lines) == 1:  # another run rewrites a day while this one computes
            table = catalog(settings).load_table(history.table_identifier(settings, fs))
            with table.transaction() as tx:
                tx.delete(EqualTo("as_of_date", other.isoformat()))
                tx.append(table.scan(row_filter=EqualTo("as_of_date", other.isoformat()))
                          .to_arrow())
                tx.set_properties({"mercury.test.interloper": "1"})

    day = date(2026, 11, 20)
    result = history.backfill(spark, settings, fs, day, day, progress=progress)
    assert any("another run committed" in line for line in lines)
    assert (result.days_written, result.reasons) == (1, {history.NEW: 1})
    stored = history.read(settings, fs, day, day)
    assert stored.num_rows == result.rows_written > 0
    assert history.read(settings, fs, other, other) == other_rows  # the other commit survives
    table = catalog(settings).load_table(history.table_identifier(settings, fs))
    assert table.properties["mercury.test.interloper"] == "1"
    assert history.recorded_days(table.properties)[day] == str(result.source_snapshot_id)


def test_a_copy_that_arrived_earlier_moves_the_first_affected_day_back():
    """``tables.upsert`` replaces a stored row by a copy that reached the stream earlier: the
    days from the earlier arrival can change, which only the old-versus-new row diff shows."""
    from mercury.features.executors.events import FeatureEvent

    fs = SETS["spending.v1"]
    t = history.day_start_ms(date(2026, 11, 2)) + HOUR_MS
    row = {"event_type": "SETTLEMENT", "amount": 5.0, "currency": "EUR"}
    stored = FeatureEvent("u1", "e1", t, t + 3 * DAY_MS, (t, "e1"), row)
    earlier = FeatureEvent("u1", "e1", t, t + DAY_MS, (t, "e1"), row)
    spans = history.changed_spans(fs, [stored], [earlier])
    assert min(first for first, _ in spans) == date(2026, 11, 3)
    assert history.changed_spans(fs, [stored], [stored]) == []


def test_plan_reasons():
    days = history.days_in(date(2026, 11, 1), date(2026, 11, 4))
    recorded = {days[0]: "7", days[1]: "8", days[2]: "9"}
    asked: list[int | None] = []

    def spans_since(snapshot_id):
        asked.append(snapshot_id)
        return [(days[1], days[1])]

    todo = history.plan(days, recorded, current=9, kept_snapshots=frozenset({8, 9}),
                        spans_since=spans_since, forced=False)
    # 7 was expired: nothing to diff against; 8 is diffed; 9 is current; the 4th never stored.
    assert todo == {days[0]: history.FORCED, days[1]: history.CHANGED, days[3]: history.NEW}
    assert asked == [8]
    assert history.plan(days, recorded, 9, frozenset({7, 8, 9}), spans_since, forced=True) == {
        days[0]: history.FORCED, days[1]: history.FORCED, days[2]: history.FORCED,
        days[3]: history.NEW}
    assert history.recorded_days({history.DAYS_PROPERTY: history.render_days(recorded)}) == \
        recorded


def test_a_changed_definition_forces_its_days_and_forgets_the_others(spark, world,  # noqa: F811
                                                                      first_runs):
    from mercury.lake.tables import catalog

    settings, _ = world
    fs = SETS["declines.v1"]
    table = catalog(settings).load_table(history.table_identifier(settings, fs))
    with table.transaction() as tx:
        tx.set_properties({history.DEFINITION_PROPERTY: "0" * 64})
    day = date(2026, 11, 5)
    result = history.backfill(spark, settings, fs, day, day)
    assert result.reasons == {history.FORCED: 1}
    table = catalog(settings).load_table(history.table_identifier(settings, fs))
    assert set(history.recorded_days(table.properties)) == {day}  # the rest will be "new"
    assert table.properties[history.DEFINITION_PROPERTY] == history.definition_digest(fs)

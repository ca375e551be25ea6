"""The Spark executor held to the reference executor (the oracle), query row by query row.

An adversarial stream from the generator (duplicates, out-of-order and late arrivals,
malformed and schema-evolved records) plus hand-made profile change events is normalised into
each compiled set's events frame; ``point_in_time`` computes every query row's values as of
its own time, and ``spark_executor.compare`` holds each to ``reference.values_for`` for that
entity and time with ``consistency.same``. As-of times: a few global ones for every entity,
and per-row ones drawn around events (just before and at an arrival and an event time, at the
last and first millisecond of tiles, where an event leaves each window, where a latest value
ages out or expires). Targeted tests pin lateness, future events, duplicates, and show that a
window off by one tile is caught. One Spark session for the whole run.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mercury.durations import DAY_MS, HOUR_MS, MINUTE_MS, parse_duration
from mercury.features.definition.compile import load_compiled
from mercury.features.definition.dsl import Aggregate, Latest
from mercury.features.definition.windows import window
from mercury.features.executors.events import normalise
from mercury.features.executors.reference import valid_record
from mercury.features.executors.spark import executor as sx
from tests.conftest import write_config
from tests.spark_fixtures import spark  # noqa: F401 (the session-scoped fixture)

EVENTS, USERS = 4_000, 80
SETS = {fs.ref: fs for fs in load_compiled()}
STREAMS = ("transactions", "user_activity", "risk_signals")
SAMPLED_EVENTS = 50  # per set, for as-of times drawn around events
QUERY_SCHEMA = "query_id string, entity_id string, as_of_ms long"


# ---- the world -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Settings of a temporary data folder, and valid records per stream in arrival order."""
    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventReader
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from tests.test_online_store import profile_changes

    tmp = tmp_path_factory.mktemp("spark_world")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(write_config(tmp)))
        settings = load_settings()
        generate(settings, Knobs(events=EVENTS, users=USERS), with_postgres=False,
                 show_progress=False)  # default anomaly rates
    reader = FileEventReader(settings.event_log.root)
    arrivals = [(s, m.value) for s in STREAMS for m in reader.read(s)]
    records: dict[str, list[dict]] = {}
    for stream, payload in arrivals:
        record = valid_record(stream, payload)
        if record is not None:
            records.setdefault(stream, []).append(record)
    users = sorted({r["user_id"] for r in records["transactions"]})
    for stream, payload in profile_changes(users[:30], start_ms=Knobs().start_ms):
        records.setdefault(stream, []).append(valid_record(stream, payload))
    return settings, records


def events_of(feature_set, records):
    return [e for r in records if (e := normalise(feature_set, r)) is not None]


def around(feature_set, event) -> set[int]:
    """As-of times where something about ``event`` changes."""
    times = {event.arrival_ts - 1, event.arrival_ts, event.event_ts - 1, event.event_ts}
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            for text in feature.windows:
                spec = window(text)
                h = spec.hop_ms
                end_of_tile = (event.arrival_ts // h + 1) * h
                leaves = (event.event_ts // h + spec.tiles) * h  # first as-of it is out
                times |= {end_of_tile - 1, end_of_tile, leaves - 1, leaves}
        elif isinstance(feature, Latest):
            if feature.max_age:
                age = parse_duration(feature.max_age)
                times |= {event.event_ts + age, event.event_ts + age + 1}
            expires = event.row.get(feature.expires) if feature.expires else None
            if expires is not None:
                times |= {expires - 1, expires}
    return times


def queries_for(feature_set, events, seed: int = 11) -> list[tuple[str, str, int]]:
    entities = sorted({e.entity_id for e in events}) + ["u-nobody"]
    arrivals = sorted(e.arrival_ts for e in events)
    first, last = arrivals[0], arrivals[-1]
    global_times = [first - 1, arrivals[len(arrivals) // 2], last, last + 8 * DAY_MS]
    rows = [(entity, t) for t in global_times for entity in entities]
    for event in random.Random(seed).sample(events, min(SAMPLED_EVENTS, len(events))):
        rows += [(event.entity_id, t) for t in sorted(around(feature_set, event))]
    return [(str(i), entity, t) for i, (entity, t) in enumerate(rows)]


def run(spark, feature_set, records_or_frame, queries):  # noqa: F811
    events = records_or_frame if not isinstance(records_or_frame, list) else \
        sx.events_frame(spark, feature_set, records_or_frame)
    frame = spark.createDataFrame(queries, QUERY_SCHEMA)
    return sx.point_in_time(feature_set, events, frame).collect()


# ---- every set, against the oracle ---------------------------------------------------------

@pytest.mark.parametrize("ref", sorted(SETS))
def test_spark_agrees_with_reference(spark, world, ref):  # noqa: F811
    _, records = world
    feature_set = SETS[ref]
    source_records = records[feature_set.source.stream]
    events = events_of(feature_set, source_records)
    queries = queries_for(feature_set, events)
    rows = run(spark, feature_set, source_records, queries)
    assert len(rows) == len(queries)
    report = sx.compare(feature_set, events, rows)
    assert report.ok, report.summary()
    present = [r for r in rows if r["values"] is not None]
    assert 0 < len(present) < len(rows)  # both absent and present entities were asked about
    assert {r["query_id"] for r in rows} == {q[0] for q in queries}


def test_world_is_adversarial(world):
    """The stream really has what the agreement test claims to survive."""
    _, records = world
    spending = SETS["spending.v1"]
    events = events_of(spending, records["transactions"])
    ids = [e.event_id for e in events]
    assert len(ids) > len(set(ids))  # duplicates
    assert any(e.arrival_ts - e.event_ts > HOUR_MS for e in events)  # late arrivals
    arrival_order = [e.event_ts for e in events]
    assert arrival_order != sorted(arrival_order)  # out of order
    assert any("installment_plan_id" in r for r in records["transactions"])  # evolved schema
    profile = events_of(SETS["profile.v1"], records["user_profile_cdc"])
    assert any(e.deleted for e in profile)


# ---- targeted cases, on literal records -------------------------------------------------------

T0 = 1_793_491_200_000 + 10 * HOUR_MS  # a whole hour: tiles of every hop start here


def txn(event_id, event_ts, ingest_ts, amount=10.0, event_type="SETTLEMENT", user="u1",
        purchase=None, currency="EUR"):
    return {"event_id": event_id, "user_id": user, "account_id": "a1", "merchant_id": "m1",
            "amount": amount, "currency": currency, "event_type": event_type,
            "event_ts": event_ts, "ingest_ts": ingest_ts, "risk_score": 0.1,
            "mcc_code": "5411", "country": "GB", "purchase_id": purchase or f"p-{event_id}",
            "auth_decision": None, "decline_reason": None, "reversal_reason": None}


def values_at(spark, feature_set, records, times, user="u1"):  # noqa: F811
    queries = [(str(t), user, t) for t in times]
    rows = run(spark, feature_set, records, queries)
    events = events_of(feature_set, records)
    report = sx.compare(feature_set, events, rows)
    assert report.ok, report.summary()
    return {r["as_of_ms"]: sx.decode_values(r["values"]) for r in rows}


def test_late_and_future_events_never_count(spark):  # noqa: F811
    spending, purchases = SETS["spending.v1"], SETS["purchases.v1"]
    as_of = T0 + HOUR_MS
    records = [
        txn("on-time", T0, T0 + 1_000),
        txn("late", T0 + 10 * MINUTE_MS, as_of + HOUR_MS),       # arrives after as_of
        txn("future", as_of + 5 * MINUTE_MS, T0 + 30 * MINUTE_MS),  # happens after as_of
        txn("too-late", T0 - 31 * DAY_MS, T0 + 5 * MINUTE_MS),   # beyond MAX_LATENESS_MS
    ]
    later = as_of + 2 * HOUR_MS
    got = values_at(spark, spending, records, [as_of, as_of + HOUR_MS - 1, as_of + HOUR_MS,
                                               later])
    assert got[as_of]["settled_count"]["1d"] == 1
    assert got[as_of]["settled_amount"]["1d"] == {"EUR": 10.0}
    assert got[as_of + HOUR_MS - 1]["settled_count"]["1d"] == 2  # the future one happened
    assert got[as_of + HOUR_MS]["settled_count"]["1d"] == 3  # the late one arrived
    assert got[later]["settled_count"]["30d"] == 3  # the too-late one never counts
    items = values_at(spark, purchases, records, [later])[later]["recent_purchases"]
    assert [i["item"] for i in items] == ["p-future", "p-late", "p-on-time"]
    # Before anything arrived the user is absent, as in the reference.
    assert values_at(spark, spending, records, [T0])[T0] is None


def test_a_duplicate_never_counts_twice(spark):  # noqa: F811
    spending = SETS["spending.v1"]
    first = txn("e1", T0, T0 + 1_000, amount=10.0)
    records = [first, dict(first),  # the same bytes again (a producer retry)
               {**first, "amount": 99.0, "ingest_ts": T0 + 2_000}]  # a replay, changed
    as_of = T0 + 30 * MINUTE_MS
    got = values_at(spark, spending, records, [as_of])[as_of]
    assert got["settled_count"] == {"1d": 1, "7d": 1, "30d": 1}
    assert got["settled_amount"]["1h"] == {"EUR": 10.0}
    assert got["merchants"] == {"7d": 1, "30d": 1}


def test_a_window_off_by_one_tile_is_caught(spark, monkeypatch):  # noqa: F811
    spending = SETS["spending.v1"]
    event_ts = T0 + 2 * MINUTE_MS
    records = [txn("edge", event_ts, event_ts + 1_000, amount=5.0)]
    hour = window("1h")
    last_in = (event_ts // hour.hop_ms + hour.tiles) * hour.hop_ms - 1  # its last as-of in 1h
    times = [last_in, last_in + 1]
    right = values_at(spark, spending, records, times)
    assert right[last_in]["settled_amount"]["1h"] == {"EUR": 5.0}
    assert right[last_in + 1]["settled_amount"]["1h"] == {}

    correct = sx.window_first_ms
    monkeypatch.setattr(sx, "window_first_ms",
                        lambda spec, as_of: correct(spec, as_of) + spec.hop_ms)
    queries = [(str(t), "u1", t) for t in times]
    rows = run(spark, spending, records, queries)
    report = sx.compare(spending, events_of(spending, records), rows)
    assert not report.ok
    assert any("settled_amount" in m and "1h" in m for m in report.mismatches), \
        report.summary()


def test_compare_sees_absence_on_either_side():
    spending = SETS["spending.v1"]
    records = [txn("e1", T0, T0 + 1_000)]
    events = events_of(spending, records)
    want = sx.reference_for(spending, events, [("q", "u1", T0 + HOUR_MS)])["q"]
    rows = [{"query_id": "q", "entity_id": "u1", "as_of_ms": T0 + HOUR_MS, "values": None},
            {"query_id": "r", "entity_id": "u1", "as_of_ms": T0, "values": None}]
    report = sx.compare(spending, events, rows)
    assert len(report.mismatches) == 1 and "spark=None" in report.mismatches[0]
    assert want is not None


# ---- from the lake, and the job ----------------------------------------------------------------

@pytest.fixture(scope="module")
def lake(world):
    """The world's valid records committed to the temporary lake by the compaction step."""
    from tests.lake_fixtures import compact_into_lake

    settings, records = world
    compact_into_lake(settings, records)
    return settings, records


@pytest.mark.parametrize("ref", ["spending.v1", "risk.v1", "profile.v1"])
def test_lake_events_agree_with_reference(spark, lake, ref):  # noqa: F811
    settings, records = lake
    feature_set = SETS[ref]
    events = events_of(feature_set, records[feature_set.source.stream])
    last = max(e.arrival_ts for e in events)
    entities = sorted({e.entity_id for e in events})
    queries = [(f"{e}@{t}", e, t) for t in (last - DAY_MS, last) for e in entities]
    frame = sx.lake_events_frame(spark, settings, feature_set)
    rows = run(spark, feature_set, frame, queries)
    report = sx.compare(feature_set, events, rows)
    assert report.ok, report.summary()


def test_point_in_time_job(spark, lake, tmp_path):  # noqa: F811
    from spark_jobs import point_in_time as job

    settings, records = lake
    risk = SETS["risk.v1"]
    events = events_of(risk, records["risk_signals"])
    queries = queries_for(risk, events, seed=3)[:400]
    pq.write_table(pa.table({"query_id": [q[0] for q in queries],
                             "entity_id": [q[1] for q in queries],
                             "as_of_ms": [q[2] for q in queries]}), tmp_path / "queries.parquet")
    out = tmp_path / "out"
    for _ in range(2):  # a re-run overwrites: same rows, not twice as many
        written = job.run(spark, settings, "risk.v1", str(tmp_path / "queries.parquet"),
                          str(out))
        assert written == len(queries)
    rows = pq.read_table(out).to_pylist()
    report = sx.compare(risk, events, rows)
    assert report.ok, report.summary()


# ---- no Spark needed ---------------------------------------------------------------------------

def test_events_table_types_rows_from_the_contract():
    spending, profile = SETS["spending.v1"], SETS["profile.v1"]
    row = sx.row_schema(spending)
    assert row.field("amount").type == pa.float64()
    assert row.field("category").type == pa.string()  # derived
    assert "event_id" not in sx.used_columns(spending)
    table = sx.events_table(spending, [txn("e1", T0, T0 + 1), txn("e1", T0, T0 + 2)])
    assert table.column_names == list(sx.EVENT_COLUMNS)
    assert table["log_pos"].to_pylist() == [0, 1]
    assert table["order_num"].to_pylist() == [T0, T0]
    cdc = sx.row_schema(profile)
    assert cdc.field("updated_at").type == pa.int64()  # epoch ms, as in the row


def test_session_conf_is_local_and_utc():
    from mercury.features.executors.spark.session import SparkConfig, session_conf, spark_config

    conf = session_conf(SparkConfig())
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert conf["spark.driver.host"] == "127.0.0.1"
    assert spark_config(None) == SparkConfig()
    with pytest.raises(ValueError):
        SparkConfig(shuffle_partition=3)  # a typo is an error, not a default

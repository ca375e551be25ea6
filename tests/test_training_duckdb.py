"""Training sets on DuckDB held to the reference executor, label row by label row.

The adversarial world of tests/test_spark_executor.py (the generator's duplicates, late,
out-of-order, malformed and schema-evolved records, plus profile change events with deletes)
gives every compiled set's events; label rows sit where something changes (just before and at
an arrival and an event time, at tile ends, where an event leaves a window, where a latest
value ages out or expires), at a few global times, and for an unknown entity. Every value of
every row must equal ``reference.values_for`` for that entity and time. Literal streams pin
the bitemporal rule on the as-of join (a late event and a future one never appear; a deleted
or replayed value), and a wrong generator is shown to be caught. No Spark here.
"""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from mercury.durations import HOUR_MS, MINUTE_MS
from mercury.features.definition.dsl import Aggregate, FeatureSet, Latest
from mercury.features.executors.agreement import same
from mercury.features.executors.duck import sql as duck_sql
from mercury.features.executors.spark import executor as sx
from mercury.features.offline.training import feature_column
from mercury.features.offline.training_duckdb import training_query, training_table
from tests.test_spark_executor import (  # noqa: F401 (lake and world are fixtures)
    SETS,
    T0,
    events_of,
    lake,
    queries_for,
    txn,
    world,
)


def labels_table(rows):
    return pa.table({"entity_id": [r[0] for r in rows],
                     "label_ts": pa.array([r[1] for r in rows], pa.int64()),
                     "label": pa.array([i % 2 for i in range(len(rows))], pa.int8())})


def mismatches(feature_set, events, table, rows):
    """Every (row, feature) whose value differs from the reference's."""
    expected = sx.reference_for(feature_set, events, [(i, e, t) for i, (e, t) in enumerate(rows)])
    columns = {f.name: table[feature_column(feature_set, f.name)].to_pylist()
               for f in feature_set.features}
    wrong = []
    for i, want in expected.items():
        got = {name: None if values[i] is None else orjson.loads(values[i])
               for name, values in columns.items()}
        if want is None:
            if any(v is not None for v in got.values()):
                wrong.append((i, rows[i], got, None))
            continue
        wrong += [(i, rows[i], name, got[name], value) for name, value in want.items()
                  if not same(got[name], value)]
    return wrong


@pytest.mark.parametrize("ref", sorted(SETS))
def test_duckdb_agrees_with_reference(world, ref):  # noqa: F811
    _, records = world
    feature_set = SETS[ref]
    source = records[feature_set.source.stream]
    events = events_of(feature_set, source)
    rows = [(entity, t) for _, entity, t in queries_for(feature_set, events)]
    table = training_table(None, labels_table(rows), [ref],
                           events={ref: sx.events_table(feature_set, source)})
    assert table["label"].to_pylist() == [i % 2 for i in range(len(rows))]  # order kept
    assert table["entity_id"].to_pylist() == [e for e, _ in rows]
    wrong = mismatches(feature_set, events, table, rows)
    assert not wrong, f"{len(wrong)} of {len(rows)} rows differ, e.g. {wrong[:3]}"
    first = table[feature_column(feature_set, feature_set.features[0].name)]
    assert 0 < first.null_count < len(rows)  # absent and present entities were both asked


# ---- literal streams: the bitemporal rule on the as-of join ---------------------------------

AS_OF = T0 + HOUR_MS
FREEZES = [  # user_activity records of u1, in arrival order
    ("f1", "CARD_FREEZE", T0, T0 + 1_000),
    ("f2", "CARD_UNFREEZE", T0 + 10 * MINUTE_MS, AS_OF + HOUR_MS),  # happened, arrives later
    ("f3", "CARD_FREEZE", AS_OF + 2 * HOUR_MS, AS_OF + 2 * HOUR_MS),  # happens later
    ("f1", "CARD_UNFREEZE", T0, T0 + 2_000),  # a changed replay of f1: ignored
    ("f4", "CARD_UNFREEZE", T0 - HOUR_MS, AS_OF),  # older, arrives exactly at AS_OF
]


def activity(event_id, event_type, event_ts, ingest_ts):
    return {"event_id": event_id, "user_id": "u1", "session_id": "s1",
            "event_type": event_type, "screen": None, "question_text": None,
            "platform": "IOS", "app_version": "5.1.0", "device_id": None,
            "event_ts": event_ts, "ingest_ts": ingest_ts}


def card_lock_at(times, records):
    engagement = SETS["engagement.v1"]
    table = training_table(None, labels_table([("u1", t) for t in times]),
                           ["engagement.v1:card_lock"],
                           events={"engagement.v1": sx.events_table(engagement, records)})
    return [None if v is None else orjson.loads(v)
            for v in table["engagement__card_lock"].to_pylist()]


def test_latest_sees_only_what_had_arrived():
    records = [activity(*r) for r in FREEZES]
    at = card_lock_at([T0 - 1, T0 + 999, T0 + 1_000, AS_OF, AS_OF + HOUR_MS - 1,
                       AS_OF + HOUR_MS, AS_OF + 2 * HOUR_MS - 1, AS_OF + 2 * HOUR_MS], records)
    assert at[:2] == [None, None]  # before f1 arrived
    assert at[2] == {"event_type": "CARD_FREEZE", "ts": T0}  # f1, its first arrival's type
    assert at[3] == at[2]  # f4 arrived exactly at AS_OF but is older than f1
    assert at[4] == at[2]  # f2 happened, but has not arrived
    assert at[5] == {"event_type": "CARD_UNFREEZE", "ts": T0 + 10 * MINUTE_MS}  # f2 arrived
    assert at[6] == at[5]  # f3 has not happened
    assert at[7] == {"event_type": "CARD_FREEZE", "ts": AS_OF + 2 * HOUR_MS}


def test_a_naive_as_of_join_is_caught():
    """The same checks on arrival times erased (arrival := event time) fail: f2 leaks."""
    naive = [activity(i, k, ts, ts) for i, k, ts, _ in FREEZES]
    assert card_lock_at([AS_OF], naive) == [{"event_type": "CARD_UNFREEZE",
                                             "ts": T0 + 10 * MINUTE_MS}]


def test_windowed_sum_counts_late_events_from_their_arrival():
    spending = SETS["spending.v1"]
    records = [txn("a", T0, T0 + 1_000, amount=10.0),
               txn("late", T0 + 10 * MINUTE_MS, AS_OF + HOUR_MS, amount=20.0),
               txn("a", T0, T0 + 2_000, amount=99.0),
               txn("usd", T0 + MINUTE_MS, T0 + MINUTE_MS, amount=5.0, currency="USD")]
    times = [AS_OF, AS_OF + HOUR_MS, T0 + 7 * 24 * HOUR_MS + HOUR_MS]
    table = training_table(None, labels_table([("u1", t) for t in times]),
                           ["spending.v1:settled_amount"],
                           events={"spending.v1": sx.events_table(spending, records)})
    got = [orjson.loads(v) for v in table["spending__settled_amount"].to_pylist()]
    assert got[0]["7d"] == {"EUR": 10.0, "USD": 5.0}
    assert got[1]["7d"] == {"EUR": 30.0, "USD": 5.0}
    assert got[1]["1h"] == {}  # its hour's tile starts after the events
    assert got[2]["7d"] == {}  # every event has left the 7d window
    assert got[2]["30d"] == {"EUR": 30.0, "USD": 5.0}


def test_an_off_by_one_tile_window_is_caught(world, monkeypatch):  # noqa: F811
    """A generator whose windows reach one tile too far back disagrees with the reference,
    so the agreement test can fail."""
    _, records = world
    spending = SETS["spending.v1"]
    source = records["transactions"]
    events = events_of(spending, source)
    rows = [(entity, t) for _, entity, t in queries_for(spending, events)]
    real = duck_sql.window

    def longer(text):
        spec = real(text)
        return type(spec)(spec.length_ms + spec.hop_ms, spec.hop_ms)

    monkeypatch.setattr(duck_sql, "window", longer)
    table = training_table(None, labels_table(rows), ["spending.v1"],
                           events={"spending.v1": sx.events_table(spending, source)})
    assert mismatches(spending, events, table, rows)


def test_unsupported_specs_are_refused_by_name():
    from dataclasses import replace

    from mercury.features.definition.dsl import Filter

    risk = SETS["risk.v1"]
    flags = risk.feature("flags")
    assert isinstance(flags, Latest)
    odd = replace(flags, where=(Filter("severity", "in", ([1], 2)),))
    odd_set = FeatureSet(**{**{f: getattr(risk, f) for f in
                              ("name", "version", "entity", "source", "ttl", "owner")},
                           "features": (odd,)})
    row_type = sx.row_schema(odd_set)
    with pytest.raises(duck_sql.Unsupported, match="flags: a filter value \\[1\\]"):
        duck_sql.set_query("s0", odd_set, "events_0", row_type)
    by_score = Aggregate("by_score", "count", None, ("24h",), group_by="score")
    scored = replace(odd_set, features=(by_score,))
    with pytest.raises(duck_sql.Unsupported, match="by_score: a key on 'score'"):
        duck_sql.set_query("s0", scored, "events_0", sx.row_schema(scored))


def test_the_query_reads_as_sql():
    labels = labels_table([("u1", AS_OF)])

    def query(ref):
        return training_query([SETS[ref]], [sx.events_table(SETS[ref], [])], labels)

    assert "s0_hits" in query("spending.v1")  # aggregates join labels to visible events
    assert "ASOF" not in query("engagement.v1")  # a Latest reads the running newest
    assert "max(order_num) FILTER (WHERE f0) OVER w AS best0" in query("engagement.v1")
    assert "ASOF JOIN s0_f0_series" in query("risk.v1")  # a Latest per key: as-of joins


# ---- the job, from the lake ------------------------------------------------------------------

def test_the_job_builds_from_the_lake_on_duckdb(lake, tmp_path, monkeypatch):  # noqa: F811
    """Two sets read from the temporary lake (the lake path, not given events), written by the
    job's DuckDB branch (``main``, which must start no Spark session); a re-run replaces the
    output."""
    import pyarrow.parquet as pq

    from mercury.features.offline.engine import choose
    from spark_jobs import training_set as job
    from tests.test_training_set import world_labels, write_labels

    settings, records = lake
    assert choose(settings) == "duckdb"  # jobs run locally here
    assert choose(settings, "spark") == "spark"
    labels = world_labels(records, seed=9)[:400]
    write_labels(labels, tmp_path / "labels.parquet")
    out = tmp_path / "out"
    monkeypatch.setattr(job, "bindings", lambda _config: settings)
    monkeypatch.setattr(job, "start", lambda _config: pytest.fail("Spark was started"))
    for _ in range(2):
        assert job.main(["--labels", str(tmp_path / "labels.parquet"), "--feature-sets",
                         "spending.v1,risk.v1", "--output", str(out)]) == 0
    assert len(list(out.iterdir())) == 1
    table = pq.read_table(out)
    assert [(r["entity_id"], r["label_ts"], r["label"], r["weight"])
            for r in table.to_pylist()] == labels
    rows = [(e, t) for e, t, *_ in labels]
    for ref, stream in (("spending.v1", "transactions"), ("risk.v1", "risk_signals")):
        feature_set = SETS[ref]
        wrong = mismatches(feature_set, events_of(feature_set, records[stream]), table, rows)
        assert not wrong, f"{ref}: {len(wrong)} rows differ, e.g. {wrong[:3]}"


def test_label_times_may_be_timestamps_and_bad_labels_are_refused():
    records = [activity(*r) for r in FREEZES]
    engagement = SETS["engagement.v1"]
    events = {"engagement.v1": sx.events_table(engagement, records)}
    times = [T0 - 1, T0 + 1_000, AS_OF + HOUR_MS]
    as_int = labels_table([("u1", t) for t in times])
    want = training_table(None, as_int, ["engagement.v1:card_lock"], events=events)
    for unit, tz in (("ms", None), ("us", "UTC")):
        as_time = as_int.set_column(1, "label_ts", pa.array(
            [t * (1000 if unit == "us" else 1) for t in times], pa.timestamp(unit, tz=tz)))
        got = training_table(None, as_time, ["engagement.v1:card_lock"], events=events)
        assert got["engagement__card_lock"].equals(want["engagement__card_lock"])
    assert want["engagement__card_lock"].null_count == 1
    with pytest.raises(ValueError, match="'label_ts' is string; it must be epoch milliseconds"):
        training_table(None, as_int.set_column(1, "label_ts", pa.array(["x"] * 3)),
                       ["engagement.v1"], events=events)
    with pytest.raises(ValueError, match="1 row\\(s\\) have a null 'entity_id'"):
        training_table(None, as_int.set_column(0, "entity_id", pa.array(["u1", None, "u1"])),
                       ["engagement.v1"], events=events)
    with pytest.raises(ValueError, match="settings are needed"):
        training_table(None, as_int, ["engagement.v1"])

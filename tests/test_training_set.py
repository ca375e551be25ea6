"""Point-in-time training sets: values per label row equal the reference, and leakage cannot
happen.

The adversarial world of tests/test_spark_executor.py (the generator's duplicates, late,
out-of-order, malformed and schema-evolved records, committed to a temporary lake) gives the
agreement test: every label row's every feature equals ``reference.values_for`` for its entity
as of its own time, for two sets in one build read from the lake, and through the job.
Literal streams pin leakage: an event from after the label time, and a late one that
happened before it but arrived after it, never appear, while the late one does for a later
row; a naive as-of join on event time is run on the same rows and shown to leak, so these
assertions can fail. Label rows keep their columns, order and duplicates; bad label tables
are refused with a message naming the rule.
"""

from __future__ import annotations

import random

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mercury.durations import DAY_MS, HOUR_MS, MINUTE_MS
from mercury.features.executors.agreement import same
from mercury.features.executors.spark import executor as sx
from mercury.features.offline.training import feature_column, training_set
from tests.spark_fixtures import spark  # noqa: F401 (the session-scoped fixture)
from tests.test_spark_executor import (  # noqa: F401 (lake and world are fixtures)
    SETS,
    T0,
    around,
    events_of,
    lake,
    txn,
    world,
)

LABELS = "entity_id string, label_ts long, label int, weight double"


def label_frame(spark, rows, schema=LABELS):  # noqa: F811
    return spark.createDataFrame(rows, schema)


def decoded(row, feature_set):
    """``{feature: value}`` of one output row for a set, or None if every column is null."""
    values = {f.name: row[feature_column(feature_set, f.name)] for f in feature_set.features}
    if all(v is None for v in values.values()):
        return None
    return {name: None if text is None else orjson.loads(text) for name, text in values.items()}


def assert_reference(feature_set, events, rows, labels):
    expected = sx.reference_for(feature_set, events,
                                [(i, e, t) for i, (e, t, *_) in enumerate(labels)])
    wrong = []
    for i, row in enumerate(rows):
        got, want = decoded(row, feature_set), expected[i]
        if want is None or got is None:
            if not (want is None and got is None):
                wrong.append((i, got, want))
            continue
        wrong += [(i, name, got[name], value) for name, value in want.items()
                  if not same(got[name], value)]
    assert not wrong, f"{len(wrong)} values differ from the reference, e.g. {wrong[:3]}"


# ---- the adversarial world, from the lake --------------------------------------------------

def world_labels(records, seed=5):
    """Label rows around the spending events (times where something changes) and at a few
    global times, one unknown entity, shuffled, with a label and a weight each."""
    spending = SETS["spending.v1"]
    events = events_of(spending, records["transactions"])
    rng = random.Random(seed)
    rows = []
    for event in rng.sample(events, 40):
        rows += [(event.entity_id, t) for t in sorted(around(spending, event))]
    last = max(e.arrival_ts for e in events)
    users = sorted({e.entity_id for e in events})
    rows += [(u, t) for u in users[:20] for t in (last - 3 * DAY_MS, last)]
    rows += [("u-nobody", last), rows[0], rows[0]]  # an unknown entity; a duplicated row
    rng.shuffle(rows)
    return [(e, t, i % 2, float(i)) for i, (e, t) in enumerate(rows)]


def test_values_equal_the_reference_per_row(spark, lake):  # noqa: F811
    settings, records = lake
    labels = world_labels(records)
    frame = training_set(spark, settings, label_frame(spark, labels), ["spending.v1", "risk.v1"])
    rows = frame.collect()
    assert len(rows) == len(labels)
    assert [(r["entity_id"], r["label_ts"], r["label"], r["weight"]) for r in rows] == labels
    for ref, stream in (("spending.v1", "transactions"), ("risk.v1", "risk_signals")):
        feature_set = SETS[ref]
        assert_reference(feature_set, events_of(feature_set, records[stream]), rows, labels)
    present = sum(r[feature_column(SETS["spending.v1"], "settled_count")] is not None
                  for r in rows)
    assert 0 < present < len(rows)  # both kinds of rows were asked about


def write_labels(labels, path):
    """World label rows as the job reads them: a Parquet file."""
    pq.write_table(pa.table({"entity_id": [r[0] for r in labels],
                             "label_ts": [r[1] for r in labels],
                             "label": pa.array([r[2] for r in labels], pa.int32()),
                             "weight": [r[3] for r in labels]}), path)


def test_job_writes_the_training_set(spark, lake, tmp_path):  # noqa: F811
    from spark_jobs import training_set as job

    settings, records = lake
    labels = world_labels(records, seed=9)[:300]
    write_labels(labels, tmp_path / "labels.parquet")
    out = tmp_path / "out"
    for _ in range(2):  # a re-run overwrites: the same rows, not twice as many
        written = job.run(spark, settings, str(tmp_path / "labels.parquet"), ["risk.v1"],
                          str(out), "label_ts")
        assert written == len(labels)
    rows = pq.read_table(out).to_pylist()
    key = [(r["entity_id"], r["label_ts"], r["label"], r["weight"]) for r in rows]
    assert key == labels  # in the labels' order
    risk = SETS["risk.v1"]
    assert_reference(risk, events_of(risk, records["risk_signals"]), rows, labels)


# ---- leakage, on literal streams ---------------------------------------------------------------

AS_OF = T0 + HOUR_MS
RECORDS = [
    txn("on-time", T0, T0 + 1_000, amount=10.0),
    txn("late", T0 + 10 * MINUTE_MS, AS_OF + HOUR_MS, amount=20.0),    # arrives after AS_OF
    txn("future", AS_OF + 5 * MINUTE_MS, T0 + 30 * MINUTE_MS, amount=40.0),  # happens after
    txn("on-time", T0, T0 + 2_000, amount=99.0),  # a replay of the first, changed: ignored
]
LEAK_LABELS = [("u1", AS_OF, 1, 1.0), ("u1", AS_OF + HOUR_MS, 0, 1.0), ("u1", AS_OF, 1, 1.0),
               ("u-nobody", AS_OF, 0, 2.0), ("u1", T0 - 1, 0, 1.0)]


def leak_build(spark, records, labels=LEAK_LABELS):  # noqa: F811
    sets = {ref: SETS[ref] for ref in ("spending.v1", "purchases.v1")}
    events = {ref: sx.events_frame(spark, fs, records) for ref, fs in sets.items()}
    return training_set(spark, None, label_frame(spark, labels), list(sets),
                        events=events).collect()


def cell(row, ref, feature):
    text = row[feature_column(SETS[ref], feature)]
    return None if text is None else orjson.loads(text)


def test_no_future_and_no_late_event_ever_appears(spark):  # noqa: F811
    rows = leak_build(spark, RECORDS)
    at, later, again, nobody, before = rows
    # As of AS_OF only "on-time" counts, once, with its first arrival's amount.
    assert cell(at, "spending.v1", "settled_count")["1d"] == 1
    assert cell(at, "spending.v1", "settled_amount")["1d"] == {"EUR": 10.0}
    assert [i["item"] for i in cell(at, "purchases.v1", "recent_purchases")] == ["p-on-time"]
    assert again.asDict() == at.asDict()  # a duplicated label row: two equal rows
    # An hour later the late one has arrived and the future one has happened.
    assert cell(later, "spending.v1", "settled_count")["1d"] == 3
    assert cell(later, "spending.v1", "settled_amount")["1d"] == {"EUR": 70.0}
    assert [i["item"] for i in cell(later, "purchases.v1", "recent_purchases")] == \
        ["p-future", "p-late", "p-on-time"]
    for row in (nobody, before):  # unknown entity; nothing had arrived yet
        assert all(row[c] is None for c in row.asDict() if "__" in c)
    assert (nobody["label"], nobody["weight"]) == (0, 2.0)
    events = {ref: events_of(SETS[ref], RECORDS) for ref in ("spending.v1", "purchases.v1")}
    for ref, ev in events.items():
        assert_reference(SETS[ref], ev, rows, LEAK_LABELS)


def test_a_naive_as_of_join_would_fail_these_checks(spark):  # noqa: F811
    """The same rows, with arrival times erased (arrival := event time): what a join on event
    time alone sees. The late event leaks into the AS_OF row, so the checks above bite."""
    naive = [{**r, "ingest_ts": r["event_ts"]} for r in RECORDS]
    at = leak_build(spark, naive)[0]
    assert cell(at, "spending.v1", "settled_count")["1d"] == 2
    assert "p-late" in [i["item"] for i in cell(at, "purchases.v1", "recent_purchases")]


# ---- label rows: kept as they are, or refused ----------------------------------------------

def test_timestamps_may_be_spark_timestamps(spark):  # noqa: F811
    from pyspark.sql import functions as F

    as_long = label_frame(spark, LEAK_LABELS)
    as_time = as_long.withColumn("label_ts", F.timestamp_millis("label_ts"))
    events = {"spending.v1": sx.events_frame(spark, SETS["spending.v1"], RECORDS)}
    got = training_set(spark, None, as_time, ["spending.v1:settled_count"], events=events)
    assert got.columns == ["entity_id", "label_ts", "label", "weight",
                           "spending__settled_count"]
    counts = [r["spending__settled_count"] for r in got.collect()]
    assert [orjson.loads(c)["1d"] if c else None for c in counts] == [1, 3, 1, None, None]


@pytest.mark.parametrize("labels, schema, refs, message", [
    ([("u1", 1)], "user string, label_ts long", ["spending.v1"], "no column 'entity_id'"),
    ([("u1", 1)], "entity_id string, ts long", ["spending.v1"], "no column 'label_ts'"),
    ([("u1", None)], "entity_id string, label_ts long", ["spending.v1"],
     "1 row\\(s\\) have a null 'label_ts'"),
    ([(None, 5)], "entity_id string, label_ts long", ["spending.v1"],
     "null 'entity_id'"),
    ([("u1", "2026-01-01")], "entity_id string, label_ts string", ["spending.v1"],
     "'label_ts' is string; it must be epoch milliseconds"),
    ([("u1", 1, "x")], "entity_id string, label_ts long, spending__merchants string",
     ["spending.v1"], "'spending__merchants' would be overwritten"),
    ([("u1", 1)], "entity_id string, label_ts long", ["spending.v9"],
     "unknown feature set: no compiled spec for spending.v9"),
    ([("u1", 1)], "entity_id string, label_ts long", ["spending"], "not feature set refs"),
    ([("u1", 1)], "entity_id string, label_ts long", ["spending.v1:nope"],
     "spending.v1 has no feature \\['nope'\\]"),
    ([("u1", 1)], "entity_id string, label_ts long", [], "no feature sets asked for"),
])
def test_bad_labels_are_refused(spark, labels, schema, refs, message):  # noqa: F811
    frame = spark.createDataFrame(labels, schema)
    events = {"spending.v1": sx.events_frame(spark, SETS["spending.v1"], RECORDS)}
    with pytest.raises(ValueError, match=message):
        training_set(spark, None, frame, refs, events=events)

"""Online/offline consistency, end to end: served values and online hashes against Spark.

An adversarial stream from the generator (duplicates, out-of-order and late arrivals,
malformed and schema-evolved records) plus hand-made profile change events goes (a) into a
temporary lake (the compaction step) and (b) through ``OnlineExecutor`` (the streaming job's
logic) into a private ``redis-server``. The real context API (Starlette's TestClient over the
real app) answers questions pinned at as-of times from the newest arrival to 31 days after it;
its audit records are shipped to the event log by its lifespan and loaded into
``audit.inference_requests`` by the lake loader. Then:

- ``measure_served`` finds every feature of every set 100% equal to Spark's recompute;
- a Spark-side definition with one where-filter changed drops that feature, and only it;
- values served while one event was still in flight (held back from the store, then applied)
  are reported as in-flight mismatches;
- ``measure_online`` of ``spending.v2``, filled but never promoted, is 100%;
- the CLI exits 1 naming the broken feature, 0 on a sound one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from mercury.durations import DAY_MS, HOUR_MS
from mercury.features.definition.compile import load_compiled, load_one, render
from mercury.features.definition.dsl import eq
from mercury.features.executors.reference import valid_record
from mercury.features.lifecycle import consistency as cj
from tests.conftest import metric_samples, write_config
from tests.lake_fixtures import compact_into_lake
from tests.serving_fixtures import PrivateRedis
from tests.spark_fixtures import spark  # noqa: F401 (the session-scoped fixture)
from tests.test_online_store import feed, profile_changes

EVENTS, USERS = 3_000, 50
STREAMS = ("transactions", "user_activity", "risk_signals")
SET_NAMES = ("declines", "engagement", "profile", "purchases", "risk", "spending")
OFFSETS_MS = (0, HOUR_MS + 1, 2 * DAY_MS, 8 * DAY_MS, 31 * DAY_MS)
NOBODY = "usr_nobody_at_all"  # a user with no event anywhere: every set served missing
CALLER = "llm-gateway"


@dataclass
class World:
    settings: object
    config_path: Path
    users: list[str]
    newest_ms: int  # the newest arrival over every stream
    held: dict  # the transaction kept in flight during the first window
    in_flight_window: tuple[int, int]
    main_window: tuple[int, int]
    requests: int  # in the main window
    arrivals: list  # (stream, payload) as generated, malformed included


def _in_flight_candidate(records: list[dict]) -> dict:
    """A settlement that is its user's last transaction to arrive, delivered once and on
    time: held back from the store, it is exactly an event the streaming job has not applied
    yet when a request comes at its arrival time."""
    last: dict[str, dict] = {}
    seen: dict[str, int] = {}
    for record in records:
        last[record["user_id"]] = record
        seen[record["event_id"]] = seen.get(record["event_id"], 0) + 1
    for record in last.values():
        if record["event_type"] == "SETTLEMENT" and seen[record["event_id"]] == 1 and \
                0 <= record["ingest_ts"] - record["event_ts"] < HOUR_MS:
            return record
    raise AssertionError("no settlement to hold back in this world")


class _Api:
    def __init__(self, client, settings):
        from mercury.privacy.keys import load_keys
        from mercury.serving.auth import service_token

        self.client = client
        self.settings = settings
        self.keys = load_keys(settings)
        self.token = service_token(self.keys, CALLER)

    def ask(self, user_id: str, as_of_ms: int, sets=SET_NAMES) -> dict:
        from mercury.serving.local_idp import issue_assertion

        headers = {"authorization": f"Bearer {self.token}",
                   "x-user-assertion": issue_assertion(self.settings, user_id, CALLER)}
        reply = self.client.post("/v1/context", headers=headers, json={
            "user_id": user_id, "question": "how am I doing",
            "options": {"parts": [f"features.{n}" for n in sets], "as_of_ms": as_of_ms}})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        # Every value measured, but for a user the store knows nothing of: no values made up.
        nothing = [f"features.{n}:missing:no_data" for n in sorted(sets)]
        assert body["degraded"] in ([], nothing), body["degraded"]
        assert (body["degraded"] == nothing) == (user_id == NOBODY), user_id
        return body


def _no_index():
    raise RuntimeError("no document index in this test: only features are asked for")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from starlette.testclient import TestClient

    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventReader
    from mercury.features.executors.streaming.executor import OnlineExecutor
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from mercury.lake.load import load_stream
    from mercury.online.factory import open_store
    from mercury.serving.app import create_app
    from mercury.serving.runtime import build_runtime

    tmp = tmp_path_factory.mktemp("consistency")
    redis = PrivateRedis(tmp)
    redis.start()
    # Generous deadlines: on a busy CI host a missed deadline would serve a snapshot, which
    # is not measured; these tests want every answer online. The world is dated November 2026
    # and asked as of up to 31 days after its newest arrival: a replay deployment's limits.
    path = write_config(tmp, online_store={"port": redis.port, "db": 0},
                        serving={"budget_ms": 5_000, "features_deadline_ms": 4_000,
                                 "audit_ship_interval_s": 0.2,
                                 "as_of_future_skew_ms": 400 * 86_400_000,
                                 "as_of_max_age_s": 20 * 365 * 86_400})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(path))
        settings = load_settings()
        generate(settings, Knobs(events=EVENTS, users=USERS), with_postgres=False,
                 show_progress=False)  # default anomaly rates
    reader = FileEventReader(settings.event_log.root)
    arrivals = [(s, m.value) for s in STREAMS for m in reader.read(s)]
    records: dict[str, list[dict]] = {}
    for stream, payload in arrivals:
        if (record := valid_record(stream, payload)) is not None:
            records.setdefault(stream, []).append(record)
    users = sorted({r["user_id"] for r in records["transactions"]})
    changes = profile_changes(users[:20], start_ms=Knobs().start_ms)
    records["user_profile_cdc"] = [valid_record(s, p) for s, p in changes]
    compact_into_lake(settings, records)
    newest = max(r["ingest_ts"] for s in STREAMS for r in records[s])

    held = _in_flight_candidate(records["transactions"])
    (held_arrival,) = [a for a in arrivals if a[0] == "transactions" and _same_event(a[1], held)]
    store = open_store(settings)
    executor, states = OnlineExecutor(load_compiled()), {}  # every version, v2 included
    feed(executor, [a for a in arrivals + changes if a is not held_arrival], store, states)
    for name in SET_NAMES:
        store.set_active(name, 1)  # spending.v2 is filled but never promoted

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(path))
        app = create_app(lambda: build_runtime(settings, retriever_factory=_no_index))
        with TestClient(app) as client:
            _wait_ready(client)
            api = _Api(client, settings)
            start = int(time.time() * 1000)
            api.ask(held["user_id"], held["ingest_ts"], sets=("spending",))
            in_flight_window = (start, int(time.time() * 1000) + 1)
            feed(executor, [held_arrival], store, states)  # applied now
            time.sleep(0.01)
            start = int(time.time() * 1000)
            requests = 0
            for i, user in enumerate([*users, NOBODY]):
                for offset in OFFSETS_MS[i % 2::2] if user != NOBODY else OFFSETS_MS[:1]:
                    api.ask(user, newest + offset)
                    requests += 1
            main_window = (start, int(time.time() * 1000) + 1)
    store.close()
    report = load_stream(settings, "inference_audit")  # what the lifespan's end shipped
    assert report.inserted == requests + 1, report.summary()
    yield World(settings, path, users, newest, held, in_flight_window, main_window, requests,
                arrivals)
    redis.stop()


def _same_event(payload: bytes, record: dict) -> bool:
    try:
        return orjson.loads(payload).get("event_id") == record["event_id"]
    except (orjson.JSONDecodeError, AttributeError):
        return False


def _wait_ready(client, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the API did not become ready")


def broken_spending():
    """spending.v1 with settled_count counting authorisations instead of settlements."""
    (spending,) = load_compiled(["spending.v1"])
    features = tuple(dataclasses.replace(f, where=(eq("event_type", "AUTH"),))
                     if f.name == "settled_count" else f for f in spending.features)
    return dataclasses.replace(spending, features=features)


# ---- served values --------------------------------------------------------------------------

def test_the_stream_is_adversarial(world):
    from collections import Counter

    valid = [r for s, p in world.arrivals if (r := valid_record(s, p)) is not None]
    ids = Counter(r["event_id"] for r in valid)
    assert len(valid) < len(world.arrivals), "malformed records"
    assert any(n > 1 for n in ids.values()), "duplicates"
    assert any(r["ingest_ts"] - r["event_ts"] > HOUR_MS for r in valid), "late arrivals"
    events = [r["event_ts"] for s, p in world.arrivals
              if s == "transactions" and (r := valid_record(s, p)) is not None]
    assert events != sorted(events), "out of order"


def test_served_values_equal_the_spark_recompute(spark, world):  # noqa: F811
    lines = []
    report = cj.measure_served(spark, world.settings, *world.main_window, progress=lines.append)
    assert report.requests == world.requests
    assert report.passes(1.0), report.summary()
    assert report.score == 1.0
    sets = {fs.ref: fs for fs in load_compiled([f"{n}.v1" for n in SET_NAMES])}
    assert {ref for ref, _ in report.scores} == set(sets)
    for ref, fs in sets.items():
        for feature in fs.features:
            score = report.scores[(ref, feature.name)]
            assert (score.matched, score.total, score.in_flight) == \
                (world.requests - 1, world.requests - 1, 0), (ref, feature.name)
    # NOBODY: served "missing" (not made-up zeros), so counted apart, never compared.
    assert report.unmapped_tokens == 0
    assert report.degraded == {(ref, "missing"): 1 for ref in sets}
    assert any("spending.v1: recomputing" in line for line in lines)
    # What was compared is not trivially empty: spend was served and recomputed.
    served = cj.served_requests(world.settings, *world.main_window).to_pylist()
    amounts = [spending["settled_amount"] for r in served
               if (spending := orjson.loads(r["served_features_json"])["spending"])]
    assert sum(1 for a in amounts if any(a.get("30d", {}).values())) >= 10


def test_a_broken_definition_drops_only_that_feature_and_names_it(spark, world):  # noqa: F811
    report = cj.measure_served(spark, world.settings, *world.main_window,
                               set_refs=["spending.v1"],
                               executor_feature_sets={"spending.v1": broken_spending()})
    assert {ref for ref, _ in report.scores} == {"spending.v1"}
    failing = report.failing_features(1.0)
    assert [(s.ref, s.feature) for s in failing] == [("spending.v1", "settled_count")]
    bad = failing[0]
    assert 0 < bad.share < 1 and bad.in_flight == 0
    assert all(s.share == 1.0 for key, s in report.scores.items() if key != bad_key(bad))
    example = bad.examples[0]
    assert example.entity.startswith("ut_")  # a token, never the raw user id
    assert example.served != example.recomputed
    assert not report.passes(1.0)
    summary = report.summary()
    assert "FAILING spending.v1.settled_count" in summary and example.entity in summary
    as_json = orjson.loads(report.to_json())
    assert [f["feature"] for f in as_json["features"] if f["share"] < 1] == ["settled_count"]


def bad_key(score):
    return (score.ref, score.feature)


def test_a_value_served_before_its_event_was_applied_is_reported_in_flight(spark, world):  # noqa: F811
    report = cj.measure_served(spark, world.settings, *world.in_flight_window)
    assert report.requests == 1
    failing = report.failing_features(1.0)
    names = {s.feature for s in failing}
    # The held settlement counts in every settled feature as of its arrival.
    assert {"settled_amount", "settled_count", "merchants"} <= names
    assert "authorised_amount" not in names  # an authorisation feature: untouched
    for s in failing:
        assert s.in_flight == s.total - s.matched, s.feature  # each explained
        assert s.examples and all(e.in_flight for e in s.examples)
    assert not report.passes(1.0)  # in flight is reported, never counted as a match
    # With no allowance, nothing is explained.
    strict = cj.measure_served(spark, world.settings, *world.in_flight_window,
                               freshness_allowance_ms=0)
    assert all(s.in_flight == 0 for s in strict.scores.values())


# ---- online hashes of a version that is not served -------------------------------------------

def test_an_unpromoted_version_is_measured_from_its_own_keys(spark, world):  # noqa: F811
    from mercury.online.factory import open_store

    store = open_store(world.settings)
    assert store.active_versions(["spending"]) == {"spending": 1}
    report = cj.measure_online(spark, world.settings, load_one("spending.v2"), store)
    store.close()
    (v2,) = load_compiled(["spending.v2"])
    assert report.scope["as_of_ms"] == max(r["ingest_ts"] for s, p in world.arrivals
                                           if s == "transactions"
                                           and (r := valid_record(s, p)) is not None)
    assert report.passes(1.0), report.summary()
    assert report.compared == report.requests * len(v2.features)
    assert report.requests == len(world.users)


# ---- the job --------------------------------------------------------------------------------

def test_the_job_exits_1_naming_the_broken_feature(spark, world, tmp_path, monkeypatch,  # noqa: F811
                                                   capsys):
    from mercury.features.executors.spark import session as spark_session
    from spark_jobs import consistency as job

    monkeypatch.setattr(spark_session, "session", lambda _config: spark)
    monkeypatch.setenv("MERCURY_CONFIG", str(world.config_path))
    broken_dir = tmp_path / "compiled"
    broken_dir.mkdir()
    (broken_dir / "spending.v1.json").write_text(render(broken_spending()))
    out = tmp_path / "report.json"
    code = job.main(["online", "--feature-set", "spending.v1", "--sample", "20",
                     "--recompute-from", str(broken_dir), "--report", str(out),
                     "--config", str(world.config_path)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "FAILING spending.v1.settled_count" in printed and "e.g. ut_" in printed
    assert "spending.v1.settled_amount" in printed  # the table lists every feature
    report = orjson.loads(out.read_text())
    assert [f["feature"] for f in report["features"] if f["share"] < 1] == ["settled_count"]
    assert report["scope"]["entities"] == 20
    metrics = world.settings.metrics_dir / "feature_consistency.prom"
    assert not metrics.exists()  # a what-if run of other definitions is not the score

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(world.main_window[0] / 1000 - 1))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(world.main_window[1] / 1000 + 1))
    code = job.main(["served", "--since", since, "--until", until, "--feature-set", "risk.v1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS at 100%" in printed and "risk.v1." in printed
    shares = {dict(labels)["feature"]: value
              for (name, labels), value in metric_samples(metrics).items()
              if name == "mercury_feature_consistency_share"
              and dict(labels)["kind"] == "served" and dict(labels)["feature_set"] == "risk.v1"}
    assert shares and set(shares.values()) == {1.0}  # what Prometheus alerts on

    assert job.main(["online", "--feature-set", "spending.v9"]) == 2
    assert "no compiled spec for spending.v9" in capsys.readouterr().err


# ---- no Spark needed ------------------------------------------------------------------------

def test_values_not_served_online_are_counted_apart_never_as_matches():
    report = cj.ConsistencyReport("served")
    values = {"spending": {"settled_count": {"7d": 1}}, "risk": None, "declines": {"x": 1}}
    rows = [{"request_id": "r1", "user_token": "ut_a", "features_as_of": 5,
             "feature_versions": [("spending", 1), ("risk", 1), ("declines", 1)],
             "served_features_json": orjson.dumps(values).decode(),
             "degraded_parts": ["features.risk:unavailable:deadline",
                                "features.declines:snapshot:breaker_open"]}]
    by_ref = cj._served_by_set(rows, None, report)
    assert list(by_ref) == ["spending.v1"] and by_ref["spending.v1"][0].as_of_ms == 5
    assert report.degraded == {("risk.v1", "unavailable"): 1, ("declines.v1", "snapshot"): 1}
    assert cj._served_by_set(rows, {"risk.v1"}, cj.ConsistencyReport("served")) == {}


def test_an_empty_measurement_never_passes_and_shares_are_per_feature():
    empty = cj.ConsistencyReport("online")
    assert empty.score is None and not empty.passes(0.0)
    assert "nothing was compared" in empty.summary()
    report = cj.ConsistencyReport("online", max_examples=1)
    for i in range(4):
        report.record("s.v1", "a", f"ut_{i}", i, 1.0, 1.0 + 1e-12)  # float tolerance
        report.record("s.v1", "b", f"ut_{i}", i, i, 0)
    assert report.scores[("s.v1", "a")].share == 1.0
    assert report.scores[("s.v1", "b")].share == 0.25 and report.score == 0.25
    assert report.passes(0.25) and not report.passes(0.5)
    assert [s.feature for s in report.failing_features(0.5)] == ["b"]
    assert len(report.scores[("s.v1", "b")].examples) == 1  # capped


def test_the_job_refuses_times_without_a_zone_and_an_empty_range():
    from spark_jobs import consistency as job

    with pytest.raises(SystemExit):
        job.parse_args(["served", "--since", "2026-11-21T00:00:00", "--until",
                        "2026-11-22T00:00:00Z"])
    with pytest.raises(SystemExit):
        job.parse_args(["served", "--since", "2026-11-22T00:00:00Z", "--until",
                        "2026-11-21T00:00:00Z"])
    args = job.parse_args(["served", "--since", "2026-11-21T00:00:00Z", "--until",
                           "2026-11-22T00:00:00+00:00"])
    assert args.until - args.since == DAY_MS

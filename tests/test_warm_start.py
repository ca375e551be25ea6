"""The warm-start seam: a new version filled from the lake up to an arrival cut T, then taken
over by the streaming executor, is exactly what the reference executor computes.

An adversarial transactions stream (the generator's duplicates, out-of-order, late, evolved and
malformed records, plus hand-made ones across the cut: a retry after T of an event before T, a
late arrival after T with an event time before T, an out-of-order event, malformed payloads)
is split at T. The streaming executor (``OnlineExecutor`` over ``DictState``s, into a private
``redis-server``) runs spending v1 over the log up to the first record after T; the lake holds
every valid record that arrived by T; ``backfill_online`` fills spending v2 in Spark; the
executor goes on with v1 and v2 (seam from the store's marker) over the rest of the log. Both
versions must then equal ``reference_values`` over the whole log, and two controls must fail:
v2 streamed from empty states after T (misses the records before T), and v2 fed again records
before T on top of its bootstrap (counts them twice).
"""

from __future__ import annotations

import uuid

import orjson
import pytest

from mercury.durations import DAY_MS, HOUR_MS
from mercury.features.definition.compile import load_compiled
from mercury.features.executors.agreement import compare, last_arrival
from mercury.features.executors.reference import valid_record
from mercury.features.executors.streaming.executor import DictState, OnlineExecutor, Seam
from mercury.features.lifecycle import warm_start
from mercury.online import layout
from mercury.online.factory import open_store
from mercury.online.memory_store import MemoryOnlineStore
from tests.conftest import write_config
from tests.serving_fixtures import PrivateRedis
from tests.spark_fixtures import spark  # noqa: F401 (the session-scoped fixture)

EVENTS, USERS = 3_000, 50
V1, V2 = load_compiled(["spending.v1", "spending.v2"])
STREAM = "transactions"


# ---- the world ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Settings (private Redis, temporary lake), the log in arrival order, the cut, and the
    log position of the first record after it."""
    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventReader
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate

    tmp = tmp_path_factory.mktemp("warm_start")
    redis = PrivateRedis(tmp)
    redis.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(write_config(tmp, online_store={"port": redis.port,
                                                                    "db": 0})))
        settings = load_settings()
        generate(settings, Knobs(events=EVENTS, users=USERS), with_postgres=False,
                 show_progress=False)  # default anomaly rates
    log = [m.value for m in FileEventReader(settings.event_log.root).read(STREAM)]
    arrivals = [_arrival(p) for p in log]
    split = int(len(log) * 0.6)
    cut = max(a for a in arrivals[:split] if a is not None)  # every record read so far is <= T
    log = log[:split] + _across_the_cut(log[:split], cut) + log[split:]
    try:
        yield settings, log, cut, split
    finally:
        redis.stop()


def _arrival(payload: bytes) -> int | None:
    try:
        return int(orjson.loads(payload)["ingest_ts"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _across_the_cut(before: list[bytes], cut: int) -> list[bytes]:
    """Hand-made records arriving just after T, each an edge of the seam."""
    settled = [r for p in before if (r := valid_record(STREAM, p)) is not None
               and r["event_type"] == "SETTLEMENT"]
    recent = next(r for r in reversed(settled) if r["ingest_ts"] > cut - 12 * HOUR_MS)
    retry = dict(recent, ingest_ts=cut + HOUR_MS)  # a duplicate across the cut
    late = [dict(settled[-i], event_id=str(uuid.uuid4()), purchase_id=f"pur_{uuid.uuid4().hex}",
                 event_ts=cut - i * 9 * HOUR_MS, ingest_ts=cut + i * HOUR_MS, amount=12.5 * i)
            for i in range(1, 9)]  # up to 3 days late, several users
    out_of_order = dict(settled[-2], event_id=str(uuid.uuid4()), event_ts=cut - 5 * HOUR_MS,
                        ingest_ts=cut + 30 * 60_000, amount=7.5, country="NO")
    missing_user = {k: v for k, v in late[0].items() if k != "user_id"}
    payloads = [orjson.dumps(r) for r in (retry, *late, out_of_order)]
    payloads += [b'{"event_id": "broken', orjson.dumps(dict(missing_user, event_id="x"))]
    return payloads


@pytest.fixture(scope="module")
def store(world):
    settings = world[0]
    store = open_store(settings)
    yield store
    store.close()


def feed(executor, log, store, states: dict) -> int:
    """What the streaming engine does: validate, route, process per key, write in batches."""
    pending, processed = [], 0
    for payload in log:
        record = valid_record(STREAM, payload)
        if record is None:
            continue  # the dead-letter side output
        processed += 1
        for key, _ in executor.route(STREAM, record):
            pending += executor.process(key, STREAM, record,
                                        states.setdefault(key, DictState())).writes
        if len(pending) >= 500:
            store.write(pending)
            pending = []
    store.write(pending)
    return processed


@pytest.fixture(scope="module")
def seamed(world, store, spark):  # noqa: F811
    """v1 streamed up to the split; v2 backfilled up to T; both streamed over the rest."""
    from mercury.lake import tables

    settings, log, cut, split = world
    states: dict = {}
    feed(OnlineExecutor([V1]), log[:split], store, states)
    in_lake = [r for p in log if (r := valid_record(STREAM, p)) is not None
               and r["ingest_ts"] <= cut]
    tables.upsert(settings, STREAM, in_lake)  # keeps the first arrival of each event id
    result = warm_start.backfill_online(spark, settings, V2, cut, store,
                                        log=lambda _m: None)
    executor = OnlineExecutor([V1, V2], seams={V2.ref: warm_start.seam(store, V2)})
    feed(executor, log[split:], store, states)
    return result, states


def as_of_times(log) -> list[int]:
    last = last_arrival((STREAM, p) for p in log)
    return [last, last + DAY_MS + 1]


# ---- the seam is exact ------------------------------------------------------------------------

def test_the_stream_is_adversarial_across_the_cut(world):
    _, log, cut, split = world
    records = [valid_record(STREAM, p) for p in log]
    assert sum(r is None for r in records) >= 2  # malformed or invalid: dead letters
    first_arrival: dict = {}
    across = late = 0
    for r in filter(None, records):
        seen = first_arrival.setdefault(r["event_id"], r["ingest_ts"])
        across += seen <= cut < r["ingest_ts"]  # a retry after T of an event before T
        late += r["ingest_ts"] > cut > r["event_ts"]  # happened before T, arrived after
    assert across >= 1 and late >= 10
    after = [r["event_ts"] for r in records[split:] if r is not None]
    assert any(b < a for a, b in zip(after, after[1:], strict=False))  # out of order


def test_both_versions_equal_the_reference(world, store, seamed):
    _, log, cut, _ = world
    result, _ = seamed
    assert result.cut_ms == cut and result.entities > 20 and result.events > 200
    report = compare([V1, V2], store, [(STREAM, p) for p in log], as_of_times(log))
    assert report.values > 500
    assert report.ok, report.summary()


def test_the_marker_and_bootstraps_carry_the_cut_and_ttls(world, store, seamed):
    settings, _, cut, _ = world
    assert warm_start.read_marker(store, V2)["cut_ms"] == cut
    ttl = warm_start.state_ttl_ms(settings, V2)
    assert ttl >= settings.offline.warm_start_state_ttl_s * 1000
    boots = list(store.scan("fs:{u:*}:spending:v2:boot"))
    assert len(boots) == seamed[0].entities
    assert 0.99 * ttl < store.client.pttl(boots[0]) <= ttl
    hashes = list(store.scan("fs:{u:*}:spending:v2"))
    assert 0.99 * 95 * DAY_MS < store.client.pttl(hashes[0]) <= 95 * DAY_MS


def test_the_lake_behind_the_cut_is_refused(world, store, spark):  # noqa: F811
    settings, _, cut, _ = world
    with pytest.raises(warm_start.LakeBehind, match=r"spending.v2: the lake's transactions "
                                                    r"holds arrivals up to \d+, before the cut"):
        warm_start.backfill_online(spark, settings, V2, cut + DAY_MS, MemoryOnlineStore(),
                                   log=lambda _m: None)


def test_a_seam_without_its_warm_start_is_refused():
    with pytest.raises(warm_start.WarmStartMissing, match=r"spending.v2: no warm start"):
        warm_start.seam(MemoryOnlineStore(), V2)


# ---- the controls fail ------------------------------------------------------------------------

def _copy_v2(store) -> MemoryOnlineStore:
    """The backfilled v2 hashes, in memory, for a control run that must not touch Redis."""
    memory = MemoryOnlineStore()
    for key in store.scan("fs:{u:*}:spending:v2"):
        memory.hashes[key] = {k.decode(): v for k, v in store.client.hgetall(key).items()}
    return memory


def test_v2_streamed_from_empty_state_after_the_cut_misses_events(world, store, seamed):
    _, log, _, split = world
    memory = MemoryOnlineStore()
    feed(OnlineExecutor([V2]), log[split:], memory, {})
    report = compare([V2], memory, [(STREAM, p) for p in log], as_of_times(log))
    assert not report.ok and len(report.mismatches) > 50


def test_records_before_the_cut_fed_again_count_twice(world, store, seamed):
    _, log, cut, split = world
    memory = _copy_v2(store)
    boot = warm_start.seam(store, V2)
    no_skip = Seam(cut_ms=cut - DAY_MS, load=boot.load)  # the last day before T fed again
    feed(OnlineExecutor([V2], seams={V2.ref: no_skip}), log, memory, {})
    report = compare([V2], memory, [(STREAM, p) for p in log], as_of_times(log))
    assert not report.ok
    assert any("settled_count" in m or "settled_amount" in m for m in report.mismatches)


def test_the_seam_skips_only_its_own_version(world, seamed):
    """v1 in the same executor saw every record after the split: its state kept folding."""
    _, _, cut, _ = world
    _, states = seamed
    clocks = [s.values["set:spending.v1"]["clock"] for s in states.values()
              if "set:spending.v1" in s.values]
    assert clocks and max(clocks) > cut - 3 * DAY_MS
    assert any("set:spending.v2" in s.values for s in states.values())
    assert layout.entity_key(V2, "x").endswith(":spending:v2")



# ---- the pieces, without Spark ------------------------------------------------------------------

def _small_stream() -> list[bytes]:
    from tests.lake_fixtures import BASE_MS, transaction

    kinds = ("AUTH", "SETTLEMENT", "REVERSAL", "SETTLEMENT")
    records = [transaction(n, event_type=kinds[n % 4], purchase_id=f"pur_{n // 2}",
                           auth_decision="APPROVED" if n % 4 == 0 else None,
                           reversal_reason="CHARGEBACK" if n % 4 == 2 else None,
                           event_ts=BASE_MS + n * 20 * 60_000 - (n % 3) * HOUR_MS,
                           ingest_ts=BASE_MS + n * 20 * 60_000 + 100) for n in range(60)]
    return [orjson.dumps(r) for r in records]


def test_state_json_round_trips_and_folds_on_alike():
    from mercury.features.executors.events import normalise
    from mercury.features.executors.streaming import incremental
    from tests.test_online_store import profile_changes

    profile, purchases = load_compiled(["profile.v1", "purchases.v1"])  # sorted by name
    cdc = [valid_record(s, p) for s, p in profile_changes(["usr_1", "usr_2", "usr_3"], 10**12)]
    txns = [valid_record(STREAM, p) for p in _small_stream()]
    checked = 0
    for fs, records in ((V2, txns), (purchases, txns), (profile, cdc)):
        events = [e for r in records if (e := normalise(fs, r)) is not None]
        states: dict = {}
        for event in events[:-1]:
            incremental.apply(fs, states.setdefault(event.entity_id, incremental.new_state()),
                              event)
        for entity, state in states.items():
            copy = incremental.decode_state(incremental.encode_state(state))
            assert copy == state
            last = events[-1]
            if last.entity_id == entity:  # one more event folds into both the same way
                a, b = incremental.apply(fs, state, last), incremental.apply(fs, copy, last)
                assert incremental.render(fs, state, a, entity) == \
                    incremental.render(fs, copy, b, entity)
            checked += 1
    assert checked >= 10
    with pytest.raises(ValueError, match="feature state format 9"):
        incremental.decode_state(b'{"format": 9}')


def test_the_seam_skips_by_arrival_loads_once_and_shares_dedup():
    from mercury.features.executors.events import normalise
    from mercury.features.executors.streaming import incremental

    records = [valid_record(STREAM, p) for p in _small_stream()]
    user = "usr_3"
    mine = [r for r in records if r["user_id"] == user]
    cut = mine[3]["ingest_ts"]
    boot = incremental.new_state()
    for r in mine[:4]:  # what the backfill folded: arrivals <= cut
        incremental.apply(V2, boot, normalise(V2, r))
    loads: list[str] = []

    def load(entity_id):
        loads.append(entity_id)
        return incremental.decode_state(incremental.encode_state(boot))

    executor = OnlineExecutor([V1, V2], seams={V2.ref: Seam(cut, load)})
    state = DictState()
    for r in mine[:4]:  # the replay from a savepoint re-reads records up to the cut
        outcome = executor.process(f"u:{user}", STREAM, r, state)
        assert [w.key for w in outcome.writes] == [layout.entity_key(V1, user)]
    assert loads == [] and state.get("set:spending.v2") is None
    first = executor.process(f"u:{user}", STREAM, mine[4], state)
    assert loads == [user] and len(first.writes) == 2
    whole = first.writes[1]  # the first write after the seam carries every field
    assert whole.key == layout.entity_key(V2, user)
    kept = {layout.tile_field(*s) for s in boot["tiles"]} - set(whole.delete_fields)
    assert kept and set(whole.set_fields) >= kept
    executor.process(f"u:{user}", STREAM, mine[5], state)
    assert loads == [user]  # loaded once
    retry = executor.process(f"u:{user}", STREAM, dict(mine[2], ingest_ts=cut + 1), state)
    assert retry.duplicate and not retry.writes  # a retry after the cut of an event before it
    with pytest.raises(ValueError, match=r"seams for sets the executor does not run"):
        OnlineExecutor([V1], seams={V2.ref: Seam(cut, load)})

"""The engine-independent online path, held to the reference executor (the oracle).

An adversarial stream from the generator (duplicates, out-of-order and late arrivals,
malformed and schema-evolved records) plus hand-made profile change events runs through
``OnlineExecutor`` into the real local Redis (db 15, flushed before and after; nothing else is
touched). Every user's hashes, decoded with ``mercury.features.reader.decode`` at request times
at or after the last arrival, must equal ``reference_values`` on the same payloads. Engines
here load the compiled JSON specs, never the Python definitions.

Needs Redis: ``mercury stack up --only redis,postgres``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import uuid

import orjson
import pytest

from mercury.contracts import registry
from mercury.contracts.validation import validator
from mercury.durations import DAY_MS, HOUR_MS, MINUTE_MS
from mercury.features.definition.compile import load_compiled
from mercury.features.definition.dsl import Aggregate
from mercury.features.executors.events import normalise
from mercury.features.executors.reference import reference_values
from mercury.features.executors.streaming import dedup
from mercury.features.executors.streaming.executor import DictState, OnlineExecutor
from mercury.features.reader import ContextReader, decode
from mercury.online import layout
from mercury.online.memory_store import MemoryOnlineStore
from mercury.online.redis_store import RedisOnlineStore
from mercury.online.store import KeyWrite
from tests.conftest import write_config

TEST_DB = 15
EVENTS, USERS = 30_000, 400
SETS = load_compiled()
STREAMS = ("transactions", "user_activity", "risk_signals")

pytestmark = pytest.mark.stack


# ---- fixtures: Redis db 15, a generated world, the first run ------------------------------

@pytest.fixture(scope="module")
def redis_config():
    import redis

    from mercury.config import load_settings

    config = load_settings().online_store.model_copy(update={"db": TEST_DB})
    client = redis.Redis(host=config.host, port=config.port, db=TEST_DB, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis at {config.host}:{config.port} ({exc}); start it with "
                    "`mercury stack up --only redis,postgres`")
    client.flushdb()  # db 15 belongs to these tests
    yield config
    client.flushdb()  # and is left empty
    client.close()


@pytest.fixture
def store(redis_config):
    store = RedisOnlineStore(redis_config)
    yield store
    store.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(arrivals in log order, newest arrival time): the generator's stream plus CDC."""
    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventReader
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate

    tmp = tmp_path_factory.mktemp("online_world")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(write_config(tmp)))
        settings = load_settings()
        generate(settings, Knobs(events=EVENTS, users=USERS), with_postgres=False,
                 show_progress=False)  # default anomaly rates
    reader = FileEventReader(settings.event_log.root)
    arrivals = [(s, m.value) for s in STREAMS for m in reader.read(s)]
    users = sorted({r["user_id"] for s, p in arrivals if (r := _valid(s, p)) is not None})
    arrivals += profile_changes(users[:30], start_ms=Knobs().start_ms)
    newest = max(event.arrival_ts for s, p in arrivals if (r := _valid(s, p)) is not None
                 for fs in SETS if fs.source.stream == s and (event := normalise(fs, r)))
    return arrivals, newest


@pytest.fixture(scope="module")
def first_run(redis_config, world):
    """The stream processed once, with a checkpoint taken half-way; Redis as it was left."""
    arrivals, _ = world
    store = RedisOnlineStore(redis_config)
    executor = OnlineExecutor(SETS)
    states: dict = {}
    middle = len(arrivals) // 2
    stats = feed(executor, arrivals[:middle], store, states)
    checkpoint = copy.deepcopy(states)
    more = feed(executor, arrivals[middle:], store, states)
    stats = {k: stats[k] + more[k] for k in stats}
    snapshot = hashes(store)
    store.close()
    return {"stats": stats, "checkpoint": checkpoint, "middle": middle, "snapshot": snapshot}


# ---- helpers --------------------------------------------------------------------------------

def _valid(stream: str, payload: bytes) -> dict | None:
    verdict = validator(registry.stream(stream).schema_subject).validate_bytes(payload)
    return verdict.record if verdict.ok else None


def feed(executor, arrivals, store, states: dict, batch: int = 500) -> dict:
    """What a streaming engine does: validate, route, process per key, write in batches."""
    stats = {"records": 0, "invalid": 0, "duplicates": 0, "writes": 0}
    pending: list = []
    for stream, payload in arrivals:
        record = _valid(stream, payload)
        if record is None:
            stats["invalid"] += 1  # the engine's dead-letter side output
            continue
        stats["records"] += 1
        for key, _ in executor.route(stream, record):
            outcome = executor.process(key, stream, record, states.setdefault(key, DictState()))
            stats["duplicates"] += outcome.duplicate
            pending.extend(outcome.writes)
        if len(pending) >= batch:
            store.write(pending)
            stats["writes"] += len(pending)
            pending = []
    store.write(pending)
    stats["writes"] += len(pending)
    return stats


def hashes(store) -> dict[str, dict[bytes, bytes]]:
    client = store.client
    return {key: client.hgetall(key) for key in sorted(client.scan_iter(match="fs:{*",
                                                                         count=1000))}


def profile_changes(users: list[str], start_ms: int) -> list[tuple[str, bytes]]:
    """Debezium change events of ``user_profiles``: creates, updates arriving before their
    create, repeated deliveries, deletes, and a re-create after a delete."""
    out = []
    for i, user_id in enumerate(users):
        lsn, at = 10_000 + 100 * i, start_ms + i * 7 * MINUTE_MS
        v0 = _profile_row(user_id, at, kyc="PENDING")
        v1 = _profile_row(user_id, at + MINUTE_MS, kyc="VERIFIED", locale="de-DE")
        create = _change("c", None, v0, lsn, at)
        update = _change("u", v0, v1, lsn + 1, at + MINUTE_MS)
        changes = [update, create] if i % 3 == 0 else [create, update]
        if i % 4 == 0:
            changes.append(update)  # delivered again
        if i % 5 == 0:
            changes.append(_change("d", v1, None, lsn + 2, at + 2 * MINUTE_MS))
        if i % 10 == 0:
            v2 = _profile_row(user_id, at + 3 * MINUTE_MS, kyc="VERIFIED", country="FR")
            changes.append(_change("c", None, v2, lsn + 3, at + 3 * MINUTE_MS))
        out += [("user_profile_cdc", orjson.dumps(c)) for c in changes]
    return out


def _profile_row(user_id, at, kyc, locale="en-GB", country="GB"):
    return {"user_id": user_id, "full_name": "Test Person", "email": "t@example.com",
            "locale": locale, "home_country": country, "risk_tier": "LOW", "kyc_status": kyc,
            "notification_prefs": {"push": True, "email": False}, "updated_at": at}


def _change(op, before, after, lsn, ts_ms):
    return {"before": before, "after": after, "op": op,
            "source": {"connector": "postgresql", "db": "mercury", "schema": "mercury",
                       "table": "user_profiles", "lsn": lsn, "tx_id": lsn, "ts_ms": ts_ms},
            "ts_ms": ts_ms}


def differences(got, want, tolerant: bool, path: str = "") -> list[str]:
    """Where ``got`` is not ``want``: ints exactly (and still ints), floats to 1e-9 relative
    when ``tolerant`` (sums, averages, min, max), everything else equal."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{path}: keys {sorted(got) if isinstance(got, dict) else got!r} != "
                    f"{sorted(want)}"]
        return [d for k in want for d in differences(got[k], want[k], tolerant, f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got!r} != {want!r}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True))
                for d in differences(g, w, tolerant, f"{path}[{i}]")]
    if isinstance(want, float) and tolerant:
        ok = isinstance(got, float) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    elif isinstance(want, int) and not isinstance(want, bool):
        ok = type(got) is int and got == want
    else:
        ok = type(got) is type(want) and got == want
    return [] if ok else [f"{path}: {got!r} != {want!r}"]


def compare_with_oracle(store, arrivals, as_of_ms: int) -> tuple[list[str], dict]:
    want = reference_values(SETS, arrivals, as_of_ms)
    found = []
    stored = {(fs.ref, k.decode().split("{u:")[1].split("}")[0])
              for fs in SETS
              for k in store.client.scan_iter(match=f"fs:{{u:*}}:{fs.name}:v{fs.version}",
                                              count=1000)}
    for ref, user in sorted(stored - set(want)):
        found.append(f"{ref} {user}: in Redis but not in the oracle")
    # A user whose events touch no feature of a set (only declines, for spending) has no
    # hash; reading it gives the empty values, which the oracle must then give too.
    by_ref = {fs.ref: fs for fs in SETS}
    keyed = [(by_ref[ref], user) for ref, user in sorted(want)]
    fetched = store.read([layout.entity_key(fs, user) for fs, user in keyed])
    for (fs, user), fields in zip(keyed, fetched, strict=True):
        got = decode(fs, fields, as_of_ms)
        expected = want[(fs.ref, user)]
        if set(got) != set(expected):
            found.append(f"{fs.ref} {user}: features {sorted(got)} != {sorted(expected)}")
            continue
        for feature in fs.features:
            tolerant = isinstance(feature, Aggregate) and feature.op in ("sum", "avg", "min",
                                                                         "max")
            found += [f"{fs.ref} {user} {feature.name}{d}" for d in differences(
                got[feature.name], expected[feature.name], tolerant)]
    return found, want


# ---- the online path against the oracle -----------------------------------------------------

AS_OF = {"end": 0, "+30m": 30 * MINUTE_MS, "+1d": DAY_MS, "+8d": 8 * DAY_MS, "+31d": 31 * DAY_MS}


def test_the_stream_is_adversarial(first_run, world):
    arrivals, _ = world
    stats = first_run["stats"]
    assert stats["records"] + stats["invalid"] == len(arrivals)
    assert stats["invalid"] > 0.005 * len(arrivals)     # malformed records reached the engine
    assert stats["duplicates"] > 0.03 * stats["records"]  # retries were dropped by dedup
    evolved = sum(1 for s, p in arrivals if s == "transactions" and b"wallet_type" in p)
    assert evolved > 100
    records = [r for s, p in arrivals if s in STREAMS and (r := _valid(s, p)) is not None]
    late = sum(1 for r in records if r["ingest_ts"] - r["event_ts"] > HOUR_MS)
    assert late > 0.01 * len(records)  # hours to days late: settlements, chargebacks


@pytest.mark.parametrize("offset", list(AS_OF), ids=list(AS_OF))
def test_every_users_hashes_decode_to_the_oracle(first_run, world, redis_config, offset):
    arrivals, newest = world
    store = RedisOnlineStore(redis_config)
    try:
        found, want = compare_with_oracle(store, arrivals, newest + AS_OF[offset])
    finally:
        store.close()
    assert not found, f"{len(found)} differences, first ones:\n" + "\n".join(found[:15])
    users = {user for _, user in want}
    assert len(users) > 0.9 * USERS
    # The comparison is not vacuous: what each request time must show is there.
    spend = [v["settled_amount"] for (ref, _), v in want.items() if ref == "spending.v1"]
    flags = [v["flags"] for (ref, _), v in want.items() if ref == "risk.v1"]
    profiles = [v["profile"] for (ref, _), v in want.items() if ref == "profile.v1"]
    assert len(profiles) == 30 and any(p is None for p in profiles)  # deletes
    if offset == "end":
        assert sum(bool(s["7d"]) for s in spend) > 0.8 * len(spend)
        assert sum(bool(f) for f in flags) > 0.3 * len(flags)
    if offset == "+31d":
        assert not any(s["30d"] for s in spend) and not any(flags)


def test_keys_carry_the_sets_ttl(first_run, redis_config):
    from mercury.durations import parse_duration

    store = RedisOnlineStore(redis_config)
    try:
        by_key = {f"{fs.name}:v{fs.version}": fs for fs in SETS}
        for key in first_run["snapshot"]:
            ttl = parse_duration(by_key[":".join(key.decode().split(":")[3:5])].ttl)
            assert 0.99 * ttl < store.client.pttl(key) <= ttl, key
    finally:
        store.close()


# ---- replays change nothing -----------------------------------------------------------------

def test_replay_from_a_checkpoint_rewrites_the_same_bytes(first_run, world, store):
    """After a failure the engine restores its last checkpoint and reads again from there."""
    arrivals, _ = world
    states = copy.deepcopy(first_run["checkpoint"])
    feed(OnlineExecutor(SETS), arrivals[first_run["middle"]:], store, states)
    assert hashes(store) == first_run["snapshot"]


def test_reprocessing_the_whole_stream_from_scratch_rewrites_the_same_bytes(
        first_run, world, store):
    """Whole-field overwrites, never increments: a second full pass changes no byte."""
    arrivals, _ = world
    before = hashes(store)
    assert before == first_run["snapshot"]
    feed(OnlineExecutor(SETS), arrivals, store, {})
    assert hashes(store) == before


# ---- the reader -----------------------------------------------------------------------------

class CountingClient:
    """A Redis client that counts round trips: pipeline executes and direct commands."""

    def __init__(self, client):
        self._client, self.executes, self.commands = client, 0, []

    def pipeline(self, *args, **kwargs):
        pipe, outer = self._client.pipeline(*args, **kwargs), self

        class Pipe:
            def __getattr__(self, name):
                return getattr(pipe, name)

            def execute(self):
                outer.executes += 1
                return pipe.execute()

        return Pipe()

    def __getattr__(self, name):
        self.commands.append(name)
        return getattr(self._client, name)


def test_context_is_one_pipelined_round_trip(first_run, world, redis_config):
    arrivals, newest = world
    raw = RedisOnlineStore(redis_config)
    for fs in SETS:
        raw.set_active(fs.name, fs.version)
    counting = CountingClient(raw.client)
    reader = ContextReader(RedisOnlineStore(redis_config, client=counting), SETS,
                           pointer_ttl_ms=3_600_000)
    user = sorted({k.decode().split("{u:")[1].split("}")[0] for k in first_run["snapshot"]})[7]
    reader.context("u", user, newest)  # first request: reads the version pointers too
    assert counting.commands == ["mget"] and counting.executes == 1
    counting.commands.clear()
    counting.executes = 0
    context = reader.context("u", user, newest)
    assert counting.executes == 1 and counting.commands == []  # one pipeline, nothing else
    served = {fs.name: fs for fs in SETS}  # the newest version of each set was promoted last
    assert context.versions == {name: fs.version for name, fs in served.items()}
    want = reference_values(served.values(), arrivals, newest)
    for fs in served.values():
        if (fs.ref, user) in want:
            assert context.values[fs.name] == want[(fs.ref, user)]
    stamps = [s for s in context.newest_event_ms.values() if s is not None]
    assert stamps and max(stamps) <= newest
    raw.close()


def test_the_context_api_serves_the_oracle_through_the_same_read_path(first_run, world,
                                                                      redis_config):
    """The context API's own fetcher (async client, pointer cache, snapshot bookkeeping) over
    the same Redis: every served set of every user equals the reference executor."""
    import asyncio

    from mercury.serving.breaker import CircuitBreaker
    from mercury.serving.features import ONLINE, FeatureFetcher, SnapshotCache

    arrivals, newest = world
    served = {fs.name: fs for fs in SETS}  # the newest version of each set
    store = RedisOnlineStore(redis_config)
    for fs in served.values():
        store.set_active(fs.name, fs.version)
    want = reference_values(served.values(), arrivals, newest)
    users = sorted({user for _, user in want})
    fetcher = FeatureFetcher(ContextReader(store, SETS), CircuitBreaker("redis"),
                             SnapshotCache(10, 60_000))

    async def fetch_all():
        try:
            return [await fetcher.fetch(u, sorted(served), newest, deadline_s=5.0)
                    for u in users]
        finally:
            await store.aclose()

    found, compared = [], 0
    for user, sets in zip(users, asyncio.run(fetch_all()), strict=True):
        for name, fs in served.items():
            ctx = sets[name]
            assert ctx.source == ONLINE and ctx.version == fs.version
            expected = want.get((fs.ref, user))
            if expected is None:  # none of the user's events touch this set
                continue
            compared += 1
            found += [f"{fs.ref} {user} {d}" for d in differences(ctx.values, expected, True)]
    assert not found, f"{len(found)} differences, first ones:\n" + "\n".join(found[:15])
    assert len(users) > 0.9 * USERS and compared == len(want)


def test_the_active_version_pointer_switches_what_is_served(world, redis_config, store,
                                                           tmp_path, monkeypatch):
    arrivals, newest = world
    v1 = next(fs for fs in SETS if fs.name == "spending")
    v2 = dataclasses.replace(v1, version=9, features=(
        Aggregate("settled_amount", "sum", "amount", ("24h",), v1.feature("settled_amount").where),
        Aggregate("settled_total", "sum", "amount", ("30d",), v1.feature("settled_amount").where),
    ))
    feed(OnlineExecutor([v2]), [a for a in arrivals if a[0] == "transactions"], store, {})
    try:
        _switch(v1, v2, arrivals, newest, store, tmp_path, monkeypatch)
    finally:  # leave db 15 as the first run wrote it, v1 served
        store.client.delete(*store.client.scan_iter(match="fs:{u:*}:spending:v9", count=1000))
        store.set_active("spending", 1)


def _switch(v1, v2, arrivals, newest, store, tmp_path, monkeypatch):
    reader = ContextReader(store, [v1, v2], pointer_ttl_ms=0)
    user = next(user for ref, user in reference_values([v2], arrivals, newest))
    store.set_active("spending", 1)
    served = reader.context("u", user, newest)
    assert served.versions["spending"] == 1
    assert set(served.values["spending"]) == {f.name for f in v1.features}
    store.set_active("spending", 9)  # promoted: v1 stays in Redis, v9 is served
    served = reader.context("u", user, newest)
    assert served.versions["spending"] == 9
    assert served.values["spending"] == reference_values([v2], arrivals, newest)[(v2.ref, user)]
    assert store.read([layout.entity_key(v1, user)])[0]  # the old version is still there
    # Back to v1 through the command line (the compiled spec must exist).
    monkeypatch.setenv("MERCURY_CONFIG", str(write_config(tmp_path, online_store={"db": TEST_DB})))
    import argparse

    from mercury.features.cli import register

    parser = argparse.ArgumentParser(prog="mercury")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["features", "promote", "spending", "1"])
    assert args.run(args) == 0
    assert reader.context("u", user, newest).versions["spending"] == 1


# ---- dedup horizon: the documented limit ----------------------------------------------------

def _settlement(template: dict, user: str, event_ts: int, arrival_ts: int) -> bytes:
    record = dict(template, event_id=str(uuid.uuid4()), user_id=user, event_ts=event_ts,
                  ingest_ts=arrival_ts, event_type="SETTLEMENT", auth_decision=None,
                  decline_reason=None, reversal_reason=None, amount=10.0,
                  purchase_id=f"pur_{uuid.uuid4().hex[:16]}")
    payload = orjson.dumps(record)
    assert _valid("transactions", payload) is not None
    return payload


@pytest.mark.parametrize("gap_hours, counted_again", [(23, False), (25, True)])
def test_a_duplicate_beyond_the_dedup_horizon_is_counted_again(
        world, store, gap_hours, counted_again):
    assert dedup.DEDUP_HORIZON_MS == 24 * HOUR_MS
    arrivals, newest = world
    template = next(r for s, p in arrivals if s == "transactions"
                    and (r := _valid(s, p)) is not None and r["event_type"] == "SETTLEMENT")
    user, t0 = f"usr_horizon{gap_hours:02d}", newest + DAY_MS
    first = _settlement(template, user, t0, t0 + 1_000)
    later = _settlement(template, user, t0 + gap_hours * HOUR_MS, t0 + gap_hours * HOUR_MS + 1)
    stream = [("transactions", first), ("transactions", later), ("transactions", first)]
    spending = next(fs for fs in SETS if fs.name == "spending")
    feed(OnlineExecutor([spending]), stream, store, {})
    as_of = t0 + gap_hours * HOUR_MS + MINUTE_MS
    key = layout.entity_key(spending, user)
    got = decode(spending, store.read([key])[0], as_of)
    store.client.delete(key)
    want = reference_values([spending], stream, as_of)[(spending.ref, user)]
    assert want["settled_count"]["30d"] == 2  # the oracle counts an event id once, ever
    assert got["settled_count"]["30d"] == (3 if counted_again else 2)
    assert got["settled_amount"]["30d"] == {"USD" if template["currency"] == "USD"
                                            else template["currency"]:
                                            30.0 if counted_again else 20.0}


# ---- the stores' own contract ---------------------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def any_store(request):
    if request.param == "memory":
        yield MemoryOnlineStore()
        return
    store = RedisOnlineStore(request.getfixturevalue("redis_config"))
    store.client.delete("fs:{u:unit}:s:v1", "fs:{u:unit}:s:v2")
    yield store
    store.client.delete("fs:{u:unit}:s:v1", "fs:{u:unit}:s:v2")
    store.close()


def _ttl(store, key):
    return store.ttls[key] if isinstance(store, MemoryOnlineStore) else store.client.pttl(key)


def test_store_write_overwrites_deletes_and_sets_ttl(any_store):
    key, other = "fs:{u:unit}:s:v1", "fs:{u:unit}:s:v2"
    any_store.write([KeyWrite(key, {"t:5m:1": b"a", "t:5m:2": b"b", "_ts": b"1"}, (), 60_000)])
    any_store.write([KeyWrite(key, {"t:5m:2": b"B", "_ts": b"2"}, ("t:5m:1", "t:5m:9"),
                              120_000)])
    assert any_store.read([key, other]) == [{"t:5m:2": b"B", "_ts": b"2"}, {}]
    assert 119_000 < _ttl(any_store, key) <= 120_000  # renewed on every write
    any_store.write([KeyWrite(key, {"_ts": b"2"}, (), 120_000)] * 2)  # repeating changes nothing
    assert any_store.read([key]) == [{"t:5m:2": b"B", "_ts": b"2"}]
    assert any_store.active_versions(["s"]) == {"s": None}
    any_store.set_active("s", 2)
    assert any_store.active_versions(["s"]) == {"s": 2}
    if isinstance(any_store, RedisOnlineStore):
        any_store.client.delete(layout.active_key("s"))


def test_pruning_deletes_only_the_tiles_below_the_first_read_index(any_store):
    """``prune_tiles`` (the SQL job's writer keeps no list of tiles): a Lua scan on Redis."""
    key, hour, day = "fs:{u:unit}:s:v1", 3_600_000, 86_400_000
    fields = {layout.tile_field(hour, i): b"{}" for i in (8, 9, 10)}
    fields |= {layout.tile_field(day, 1): b"{}", layout.tile_field(day, 0): b"{}",
               "l:items": b"[]", "_ts": b"1"}
    any_store.write([KeyWrite(key, fields, (), 60_000)])
    any_store.write([KeyWrite(key, {"_ts": b"2"}, ttl_ms=60_000,
                              prune_tiles=((hour, 10), (day, 1)))])
    assert set(any_store.read([key])[0]) == {layout.tile_field(hour, 10),
                                            layout.tile_field(day, 1), "l:items", "_ts"}


def test_memory_store_records_ttls_without_enforcing_them():
    store = MemoryOnlineStore()
    store.write([KeyWrite("k", {"a": b"1"}, (), 5)])
    assert store.ttls == {"k": 5} and store.read(["k"]) == [{"a": b"1"}]
    store.write([KeyWrite("k", {}, ("a",), 7)])
    assert store.read(["k"]) == [{}] and store.ttls["k"] == 7

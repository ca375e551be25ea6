"""Blue/green versions in a real Redis (a private ``redis-server``): the shadow comparison names
an unchanged feature that differs, promotion and rollback switch what the reader serves, and
retiring expires the old version's keys only and refuses the served version.

Both spending versions are streamed by ``OnlineExecutor`` over a small stream with duplicates,
out-of-order events and several currencies and countries; values are held to the reference.
"""

from __future__ import annotations

import argparse

import orjson
import pytest

from mercury.durations import DAY_MS, MINUTE_MS
from mercury.features.definition.compile import load_compiled
from mercury.features.executors.agreement import compare
from mercury.features.executors.reference import reference_values, valid_record
from mercury.features.executors.streaming.executor import DictState, OnlineExecutor
from mercury.features.lifecycle import bluegreen
from mercury.features.reader import ContextReader
from mercury.online import layout
from mercury.online.factory import open_store
from mercury.online.memory_store import MemoryOnlineStore
from tests.conftest import write_config
from tests.lake_fixtures import BASE_MS, transaction
from tests.serving_fixtures import PrivateRedis

V1, V2 = load_compiled(["spending.v1", "spending.v2"])
DECLINES = load_compiled(["declines.v1"])[0]
STREAM = "transactions"


def _stream() -> list[bytes]:
    records = []
    for n in range(240):
        kind = ("SETTLEMENT", "AUTH", "SETTLEMENT", "REVERSAL")[n % 4]
        records.append(transaction(
            n, event_type=kind, auth_decision="APPROVED" if kind == "AUTH" else None,
            reversal_reason="MERCHANT_VOID" if kind == "REVERSAL" else None,
            currency=("EUR", "USD", "GBP")[n % 3], country=("DE", "US", "GB", "FR")[n % 4],
            event_ts=BASE_MS + n * 37 * MINUTE_MS - (n % 5) * 90 * MINUTE_MS,  # out of order
            ingest_ts=BASE_MS + n * 37 * MINUTE_MS + 500))
    records += [dict(r, ingest_ts=r["ingest_ts"] + 60_000) for r in records[::17]]  # retries
    payloads = [orjson.dumps(r) for r in sorted(records, key=lambda r: r["ingest_ts"])]
    assert all(valid_record(STREAM, p) is not None for p in payloads)
    return payloads


LOG = _stream()
AS_OF = max(orjson.loads(p)["ingest_ts"] for p in LOG) + 1


@pytest.fixture(scope="module")
def redis_settings(tmp_path_factory):
    from mercury.config import load_settings

    tmp = tmp_path_factory.mktemp("blue_green")
    redis = PrivateRedis(tmp)
    redis.start()
    path = write_config(tmp, online_store={"port": redis.port, "db": 0})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(path))
        settings = load_settings()
    try:
        yield settings, path
    finally:
        redis.stop()


@pytest.fixture
def store(redis_settings):
    """Both versions (and another set) streamed into an emptied Redis."""
    settings, _ = redis_settings
    store = open_store(settings)
    store.client.flushdb()
    executor, states, pending = OnlineExecutor([V1, V2, DECLINES]), {}, []
    for payload in LOG:
        record = valid_record(STREAM, payload)
        for key, _ in executor.route(STREAM, record):
            pending += executor.process(key, STREAM, record,
                                        states.setdefault(key, DictState())).writes
    store.write(pending)
    yield store
    store.close()


def _users() -> list[str]:
    return sorted({user for _, user in reference_values([V1], [(STREAM, p) for p in LOG], AS_OF)})


# ---- shadow comparison ------------------------------------------------------------------------

def test_both_versions_hold_the_reference(store):
    report = compare([V1, V2], store, [(STREAM, p) for p in LOG], [AS_OF])
    assert report.ok and report.values > 100, report.summary()


def test_shadow_of_honest_versions_proves_unchanged_features_equal(store):
    report = bluegreen.shadow_compare(store, V1, V2)
    assert report.ok, report.summary()
    assert report.entities == len(_users()) == 7
    assert report.as_of_ms == max(int(f[layout.STAMP_FIELD]) for f in
                                  store.read([layout.entity_key(V2, u) for u in _users()]))
    by_status = {name: c.status for name, c in report.features.items()}
    assert by_status == {"settled_amount": "changed", "settled_count": "unchanged",
                         "authorised_amount": "unchanged", "settled_by_category": "unchanged",
                         "largest_purchase": "unchanged", "average_purchase": "unchanged",
                         "smallest_purchase": "unchanged", "merchants": "changed",
                         "reversed_amount": "unchanged", "settled_by_country": "new"}
    changed = report.features["settled_amount"]
    assert changed.compared_on == "windows 1h 1d 7d 30d" and changed.share == 1.0
    assert report.features["settled_by_country"].equal == 7  # every user has a value
    assert all(c.share == 1.0 for c in report.features.values())


def test_shadow_names_an_unchanged_feature_that_differs(store):
    user = _users()[3]
    key = layout.entity_key(V2, user)
    fields = store.read([key])[0]
    tile = next(name for name, raw in sorted(fields.items(), reverse=True)
                if name.startswith("t:1h:") and "settled_count" in orjson.loads(raw))
    partials = orjson.loads(fields[tile])
    partials["settled_count"][""] += 1  # a corrupted field of the new version
    store.client.hset(key, tile, orjson.dumps(partials))
    report = bluegreen.shadow_compare(store, V1, V2, as_of_ms=AS_OF)
    assert not report.ok
    assert report.differing_unchanged == ["settled_count"]
    assert report.features["settled_count"].equal == report.entities - 1
    assert report.features["settled_count"].examples[0].startswith(f"{user}: spending.v1=")
    assert "UNCHANGED FEATURES DIFFER: settled_count" in report.summary()
    assert orjson.loads(report.to_json())["differing_unchanged"] == ["settled_count"]
    # Restricted to other entities, the same versions compare equal.
    only = bluegreen.shadow_compare(store, V1, V2, entity_ids=[_users()[0]])
    assert only.ok and only.entities == 1


def test_shadow_cli_exits_1_naming_the_feature(redis_settings, store, tmp_path, monkeypatch,
                                               capsys):
    _, path = redis_settings
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    store.client.hset(layout.entity_key(V2, _users()[0]), layout.latest_field("nothing"), b"{}")
    key = layout.entity_key(V2, _users()[1])
    store.client.hdel(key, *[f for f in store.read([key])[0] if f.startswith("t:1d:")])
    args = _parser().parse_args(["features", "shadow", "spending.v1", "spending.v2",
                                 "--report", str(tmp_path / "shadow.json")])
    assert args.run(args) == 1
    out = capsys.readouterr().out
    assert "UNCHANGED FEATURES DIFFER" in out and "settled_count" in out
    written = orjson.loads((tmp_path / "shadow.json").read_bytes())
    assert "largest_purchase" in written["differing_unchanged"]


def _parser():
    from mercury.features.cli import register

    parser = argparse.ArgumentParser(prog="mercury")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


# ---- promote and roll back ----------------------------------------------------------------------

def test_promote_and_rollback_switch_what_is_served(redis_settings, store, monkeypatch, capsys):
    _, path = redis_settings
    user = _users()[2]
    reader = ContextReader(store, [V1, V2], pointer_ttl_ms=0)
    want = reference_values([V1, V2], [(STREAM, p) for p in LOG], AS_OF)

    def served():
        context = reader.context("u", user, AS_OF)
        version = context.versions["spending"]
        assert context.values["spending"] == want[(f"spending.v{version}", user)]
        return version

    assert bluegreen.promote(store, "spending", 1).before is None
    assert served() == 1
    switch = bluegreen.promote(store, "spending", 2)
    assert (switch.before, switch.after) == (1, 2) and served() == 2
    assert "settled_by_country" in reader.context("u", user, AS_OF).values["spending"]
    assert store.pointer_history("spending") == [1]
    back = bluegreen.rollback(store, "spending")
    assert (back.before, back.after) == (2, 1) and served() == 1
    with pytest.raises(bluegreen.BlueGreenError, match="no earlier served version"):
        bluegreen.rollback(store, "spending")
    with pytest.raises(bluegreen.BlueGreenError, match="no compiled spec for spending.v7"):
        bluegreen.promote(store, "spending", 7)
    assert served() == 1
    # The same through the command line, against the profile's store.
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    parser = _parser()
    for argv, version in ((["promote", "spending", "2"], 2), (["rollback", "spending"], 1)):
        args = parser.parse_args(["features", *argv])
        assert args.run(args) == 0
        assert served() == version
    out = capsys.readouterr().out
    assert "spending: now serving v2 (was v1)" in out and "now serving v1 (was v2)" in out


def test_memory_store_promotes_and_rolls_back_alike():
    memory = MemoryOnlineStore()
    assert memory.promote("s", 1) is None and memory.promote("s", 2) == 1
    assert memory.promote("s", 2) == 2 and memory.pointer_history("s") == [1]
    assert memory.rollback("s") == (2, 1) and memory.rollback("s") is None


# ---- retire -------------------------------------------------------------------------------------

def _ttls(store, pattern: str) -> dict[str, int]:
    return {k: store.client.pttl(k) for k in store.scan(pattern)}


def test_retire_expires_the_old_versions_keys_only(store):
    store.promote("spending", 2)
    decoy = "fs:{u:usr_0}:spending:v10"  # a later version sharing the prefix
    store.client.hset(decoy, "_ts", b"1")
    boot = layout.entity_key(V1, "usr_0") + ":boot"
    store.put_values({boot: b"{}"}, 30 * DAY_MS)
    before = {**_ttls(store, "fs:{u:*}:spending:v2"), **_ttls(store, "fs:{u:*}:declines:v1")}
    retired = bluegreen.retire(store, "spending", 1, after_s=3_600)
    v1_keys = _ttls(store, "fs:{u:*}:spending:v1")
    assert retired.keys == len(v1_keys) + 1 == 8  # seven hashes and one warm-start state
    assert all(0 < ttl <= 3_600_000 for ttl in v1_keys.values())
    assert 0 < store.client.pttl(boot) <= 3_600_000
    assert store.client.pttl(decoy) == -1
    after = {**_ttls(store, "fs:{u:*}:spending:v2"), **_ttls(store, "fs:{u:*}:declines:v1")}
    assert after.keys() == before.keys()
    assert all(ttl > 30 * DAY_MS for ttl in after.values())
    # Retiring again with a longer delay keeps the sooner expiry.
    bluegreen.retire(store, "spending", 1, after_s=7_200)
    assert all(ttl <= 3_600_000 for ttl in _ttls(store, "fs:{u:*}:spending:v1").values())


def test_retire_refuses_the_served_version(redis_settings, store, monkeypatch):
    settings, path = redis_settings
    store.promote("spending", 2)
    with pytest.raises(bluegreen.BlueGreenError, match="spending v2 is the served version"):
        bluegreen.retire(store, "spending", 2, after_s=settings.offline.retire_after_s)
    assert all(ttl > 30 * DAY_MS for ttl in _ttls(store, "fs:{u:*}:spending:v2").values())
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    from mercury.errors import CommandError

    args = _parser().parse_args(["features", "retire", "spending", "2"])
    with pytest.raises(CommandError, match="cannot retire: spending v2 is the served version"):
        args.run(args)

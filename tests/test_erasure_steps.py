"""The erasure's steps one by one, each on a real backend where one runs here (Iceberg on a
local SqlCatalog, DuckDB, Postgres) and on the in-memory online store (the Redis store's
``delete``/``publish_erasures`` are exercised end to end in tests/test_erasure.py)."""

from __future__ import annotations

import asyncio
import base64
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from mercury.gdpr.subject import Subject
from mercury.privacy.keys import Keys
from mercury.privacy.tombstones import erasure_hash

PURPOSES = ("tokenization", "service_tokens", "user_index")
KEYS = Keys(active=dict.fromkeys(PURPOSES, 1),
            material={(p, 1): p.encode().ljust(32, b"_") for p in PURPOSES})


def _subject(user: str) -> Subject:
    return Subject(ticket=f"T-{user}", user_id=user, tokens=(f"ut_{user}",),
                   erasure_hash=erasure_hash(KEYS, user))


def test_needles_do_not_match_a_longer_id_and_match_avro_bytes():
    import fastavro

    who = _subject("u_1")
    line = orjson.dumps({"user_id": "u_10"})
    assert not any(n in line for n in who.json_needles())
    out = io.BytesIO()
    fastavro.schemaless_writer(out, {"type": "record", "name": "r", "fields": [
        {"name": "user_id", "type": "string"}]}, {"user_id": "u_1"})
    assert who.avro_needles()[0] in out.getvalue()
    long_id = "u_" + "x" * 200  # a length that takes two varint bytes
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "string", long_id)
    assert out.getvalue() == _subject(long_id).avro_needles()[0]


def test_erasure_hash_is_not_the_token_and_depends_on_the_key():
    from mercury.privacy.protect import user_token

    assert erasure_hash(KEYS, "u_1") != user_token(KEYS, "u_1")
    other = Keys(active=dict.fromkeys(PURPOSES, 1),
                 material={(p, 1): p.encode().ljust(32, b"!") for p in PURPOSES})
    assert erasure_hash(KEYS, "u_1") != erasure_hash(other, "u_1")


def test_line_files_lose_the_users_lines_and_consumers_keep_their_place(tmp_path):
    from mercury.gdpr.files import erase_line_files

    root = tmp_path / "eventlog"
    folder = root / "transactions.dlq"
    folder.mkdir(parents=True)
    avro_blob = b"\x00\x00\x00\x00\x07" + _subject("u_1").avro_needles()[0]
    lines = [
        orjson.dumps({"n": 0, "user_id": "u_2"}),
        orjson.dumps({"n": 1, "raw_payload": orjson.dumps({"user_id": "u_1"}).decode()}),
        orjson.dumps({"n": 2, "user_id": "u_10"}),
        orjson.dumps({"n": 3, "raw_payload_base64": base64.b64encode(avro_blob).decode()}),
        orjson.dumps({"n": 4, "user_token": "ut_u_1"}),
        orjson.dumps({"n": 5, "user_id": "u_3"}),
    ]
    (folder / "part-w0-00000001.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    offsets = root / "_offsets" / "loader"
    offsets.mkdir(parents=True)
    # The group had read 4 lines of the file: 0 and 2 of them were not the user's.
    (offsets / "transactions.dlq.json").write_bytes(orjson.dumps({"part-w0-00000001.jsonl": 4}))

    removals = erase_line_files(root, [_subject("u_1")], "event_log",
                                offsets_root=root / "_offsets")

    kept = [orjson.loads(x)["n"] for x in
            (folder / "part-w0-00000001.jsonl").read_bytes().splitlines()]
    assert kept == [0, 2, 5]
    assert [(r.ticket, r.location, r.removed) for r in removals] == [
        ("T-u_1", "eventlog/transactions.dlq", 3)]
    assert orjson.loads((offsets / "transactions.dlq.json").read_bytes()) == {
        "part-w0-00000001.jsonl": 2}  # the next line read is n=5, as before


def test_online_keys_of_every_version_go_and_no_one_elses():
    from mercury.gdpr.online import erase_online
    from mercury.online.memory_store import MemoryOnlineStore
    from mercury.online.store import KeyWrite

    store = MemoryOnlineStore()
    keys = ["fs:{u:u_1}:spending:v1", "fs:{u:u_1}:spending:v2", "fs:{u:u_1}:risk:v1",
            "fs:{u:u_10}:spending:v1", "fs:{m:u_1}:merchant:v1"]
    store.write([KeyWrite(key=k, set_fields={"a": b"1"}, ttl_ms=60_000) for k in keys])
    one, none = erase_online(store, [_subject("u_1"), _subject("u_404")])
    assert (one.ticket, one.removed) == ("T-u_1", 3)
    assert one.detail == {"by_set": {"spending:v1": 1, "spending:v2": 1, "risk:v1": 1}}
    assert (none.ticket, none.removed) == ("T-u_404", 0)  # checked, nothing there
    assert sorted(store.hashes) == ["fs:{m:u_1}:merchant:v1", "fs:{u:u_10}:spending:v1"]


def test_tombstones_reload_and_keep_the_last_list_when_the_register_fails():
    from mercury.privacy.tombstones import Tombstones, record_user

    now = [0.0]
    answers: list = [frozenset({erasure_hash(KEYS, "u_1")}), RuntimeError("postgres down"),
                     frozenset({erasure_hash(KEYS, "u_1"), erasure_hash(KEYS, "u_2")})]

    def load():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    stones = Tombstones(KEYS, load, refresh_s=60, clock=lambda: now[0])
    assert stones.erased("u_1") and not stones.erased("u_2")
    now[0] = 61  # the reload fails: the list as it was stays in force
    assert stones.erased("u_1") and not stones.erased("u_2")
    now[0] = 122
    assert stones.erased("u_2")
    kept, dropped = stones.keep([{"user_id": "u_1"}, {"user_id": "u_3"},
                                 {"op": "d", "before": {"user_id": "u_2"}, "after": None}])
    assert (kept, dropped) == ([{"user_id": "u_3"}], 2)
    assert record_user({"after": {"user_id": "u_9"}}) == "u_9"
    assert record_user({"op": "d", "key": {"user_id": "u_8"}, "before": None}) == "u_8"
    assert record_user({"request_id": "r1", "user_token": "ut_7"}) == "ut_7"  # audit records
    failing = Tombstones(KEYS, lambda: (_ for _ in ()).throw(RuntimeError("down")))
    with pytest.raises(RuntimeError):  # never loaded: no answer is safe
        failing.erased("u_1")


def test_lake_rows_and_their_old_files_are_gone(tmp_settings):
    import pyarrow.parquet as pq

    from mercury.gdpr.lake import erase_lake
    from mercury.lake.tables import catalog

    lake = catalog(tmp_settings)
    lake.create_namespace_if_not_exists("raw")
    schema = pa.schema([pa.field("event_id", pa.string()), pa.field("user_id", pa.string())])
    table = lake.create_table("raw.things", schema)
    for batch in ([("e1", "u_1"), ("e2", "u_2")], [("e3", "u_1"), ("e4", "u_10")]):
        table.append(pa.Table.from_pylist(
            [{"event_id": e, "user_id": u} for e, u in batch], schema=schema))
    letters_schema = pa.schema([pa.field("dlq_id", pa.string()),
                                pa.field("raw_payload", pa.string())])
    letters = lake.create_table("raw.letters", letters_schema)
    letters.append(pa.Table.from_pylist([
        {"dlq_id": "d1", "raw_payload": '{"user_id": "u_1", "amount": "x"}'},
        {"dlq_id": "d2", "raw_payload": '{"user_id": "u_2"}'}], schema=letters_schema))

    started = datetime.now(UTC) + timedelta(seconds=1)
    batch = [_subject("u_1"), _subject("u_2")]
    removals = {(r.ticket, r.location): r.removed for r in erase_lake(tmp_settings, batch,
                                                                       started)}

    assert removals == {("T-u_1", "raw.things"): 2, ("T-u_2", "raw.things"): 1,
                        ("T-u_1", "raw.letters"): 1, ("T-u_2", "raw.letters"): 1}
    things = lake.load_table("raw.things")
    assert things.scan().to_arrow().column("user_id").to_pylist() == ["u_10"]
    assert len(things.snapshots()) == 1  # no time travel to before the erasure
    assert lake.load_table("raw.letters").scan().to_arrow().num_rows == 0
    warehouse = Path(tmp_settings.lake.warehouse)
    for path in warehouse.rglob("*.parquet"):  # the old files are gone, not only unlisted
        text = orjson.dumps(pq.read_table(path).to_pylist()).decode()
        assert '"u_1"' not in text and '"u_2"' not in text, path


def test_warehouse_tables_lose_the_rows_views_are_left(tmp_settings):
    import duckdb

    from mercury.gdpr.warehouse import erase_warehouse

    path = tmp_settings.warehouse.duckdb_path
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts")
        con.execute("create table marts.f (user_token text, n int)")
        con.execute("insert into marts.f values ('ut_u_1', 1), ('ut_u_2', 2)")
        con.execute("create view marts.v as select * from marts.f")
    [removal] = erase_warehouse(tmp_settings, [_subject("u_1")])
    assert (removal.ticket, removal.location, removal.removed) == ("T-u_1", "marts.f", 1)
    with duckdb.connect(str(path)) as con:
        assert con.execute("select user_token from marts.v").fetchall() == [("ut_u_2",)]
    # dbt's own files (run results, logs, parse cache) do not keep the erased ids
    for leftover in (Path(tmp_settings.data_dir) / "dbt").rglob("*"):
        assert not leftover.is_file() or b"u_1" not in leftover.read_bytes(), leftover


def test_register_is_idempotent_per_ticket_and_keeps_only_the_hash(tmp_settings):
    from mercury.errors import CommandError
    from mercury.privacy import erasure_register as register

    ticket = f"T-{datetime.now(UTC).timestamp()}"
    at = datetime(2026, 12, 1, tzinfo=UTC)
    token_hash = erasure_hash(KEYS, "ut_u_1")
    first = register.submit(tmp_settings, ticket, "u_1", erasure_hash(KEYS, "u_1"), at,
                            (token_hash,))
    again = register.submit(tmp_settings, ticket, "u_1", erasure_hash(KEYS, "u_1"), at)
    assert first == again and first.due_at == at + timedelta(days=30)
    with pytest.raises(CommandError, match="another user"):
        register.submit(tmp_settings, ticket, "u_2", erasure_hash(KEYS, "u_2"), at)
    assert ticket in {r.ticket for r in register.pending(tmp_settings)}
    register.complete(tmp_settings, ticket, at + timedelta(days=1))
    assert ticket not in {r.ticket for r in register.pending(tmp_settings)}
    assert {erasure_hash(KEYS, "u_1"), token_hash} <= register.erased_hashes(tmp_settings)
    with register.connect(tmp_settings) as conn:
        row = conn.execute(f"select user_id from {register.TABLE} where ticket = %s",
                           (ticket,)).fetchone()
        conn.execute(f"delete from {register.TABLE} where ticket = %s", (ticket,))
    assert row == (None,)


def test_serving_drops_erased_users_from_its_snapshot_cache():
    from mercury.online.memory_store import MemoryOnlineStore
    from mercury.serving.erasures import ErasureWatch
    from mercury.serving.features import SetContext, SnapshotCache

    snapshots = SnapshotCache(max_users=10, max_age_ms=86_400_000)
    for user in ("u_1", "u_2"):
        for name in ("spending", "risk"):
            snapshots.put(user, SetContext(name, 1, "online", 1_000, 900, {"x": 1}))

    class Fetcher:  # the two parts of FeatureFetcher the watch uses
        def __init__(self):
            self.snapshots = snapshots
            self.reader = type("Reader", (), {"store": MemoryOnlineStore()})()

    fetcher = Fetcher()
    watch = ErasureWatch(fetcher, KEYS)  # type: ignore[arg-type]
    fetcher.reader.store.publish_erasures([erasure_hash(KEYS, "u_1")], watch.seen_ms + 1,
                                          keep_ms=86_400_000)
    assert asyncio.run(watch.poll()) == 1
    assert snapshots.get("u_1", "spending", 2_000) is None
    assert snapshots.get("u_2", "risk", 2_000) is not None
    assert asyncio.run(watch.poll()) == 0  # each notice is acted on once


def test_warehouse_erasure_runs_on_the_snowflake_dialect(fakesnow_server, tmp_settings):
    """The same dbt operation on Snowflake's dialect (a fakesnow server: Snowflake cannot run
    here): upper-case identifiers from its information_schema, counts from its DELETE."""
    from mercury.gdpr.warehouse import erase_warehouse

    db = fakesnow_server.database
    with fakesnow_server.connect() as con:
        cur = con.cursor()
        cur.execute(f"create database if not exists {db}")
        cur.execute(f"create schema if not exists {db}.marts")
        cur.execute(f"create or replace table {db}.marts.f (user_token varchar, n int)")
        cur.execute(f"insert into {db}.marts.f values ('ut_u_1', 1), ('ut_u_2', 2), "
                    "('ut_u_1', 3)")
    settings = tmp_settings.model_copy(update={"warehouse": tmp_settings.warehouse.model_copy(
        update={"dbt_target": "snowflake"})})
    removals = erase_warehouse(settings, [_subject("u_1")], env_extra=fakesnow_server.dbt_env)
    assert [(r.ticket, r.location.lower(), r.removed) for r in removals
            if r.removed] == [("T-u_1", "marts.f", 2)]
    with fakesnow_server.connect() as con:
        rows = con.cursor().execute(f"select user_token from {db}.marts.f").fetchall()
    assert rows == [("ut_u_2",)]

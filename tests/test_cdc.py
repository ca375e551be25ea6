"""Profile CDC: the pgoutput decoder on literal bytes, then snapshot, changes, replays and
set-up against the real local Postgres. Every Postgres test uses its own schema, slot and
publication (dropped afterwards), so it touches neither other tests nor the demo's slot."""

from __future__ import annotations

import re
import struct
import uuid

import orjson
import psycopg
import pytest

from mercury.cdc import pgoutput, profiles
from mercury.cdc.pgoutput import UNCHANGED, DecodeError
from mercury.cdc.profiles import CdcError, CdcTarget
from mercury.contracts.validation import validator
from mercury.eventlog.file_log import FileEventReader
from mercury.generator import profiles_pg

# --- the decoder, on bytes captured from Postgres 15 ----------------------------------------
# Table exp2.t (id text, j jsonb, ts timestamptz, c char(2)), REPLICA IDENTITY FULL.

BEGIN = b"B\x00\x00\x00\x00\x02! H\x00\x03\x03\xce\xd2\xfc;<\x00\x00\x03U"
RELATION = (b"R\x00\x00@%exp2\x00t\x00f\x00\x04\x01id\x00\x00\x00\x00\x19\xff\xff\xff\xff"
            b"\x01j\x00\x00\x00\x0e\xda\xff\xff\xff\xff\x01ts\x00\x00\x00\x04\xa0\xff\xff\xff"
            b"\xff\x01c\x00\x00\x00\x04\x12\x00\x00\x00\x06")
INSERT = (b'I\x00\x00@%N\x00\x04t\x00\x00\x00\x01at\x00\x00\x00\x17{"a": false, "b": true}'
          b"t\x00\x00\x00\x1a2026-11-01 00:00:00.123+00t\x00\x00\x00\x02U ")
_OLD_A = (b'\x00\x04t\x00\x00\x00\x01at\x00\x00\x00\x17{"a": false, "b": true}'
          b"t\x00\x00\x00\x1a2026-11-01 00:00:00.123+00")
UPDATE = b"U\x00\x00@%O" + _OLD_A + b"t\x00\x00\x00\x02U N" + _OLD_A + b"t\x00\x00\x00\x02DE"
DELETE = (b"D\x00\x00@%O\x00\x04t\x00\x00\x00\x01bt\x00\x00\x00\x02{}t\x00\x00\x00\x1d"
          b"2026-11-21 21:29:28.023137+00t\x00\x00\x00\x02US")
COMMIT = b"C\x00\x00\x00\x00\x00\x02! H\x00\x00\x00\x00\x02! x\x00\x03\x03\xce\xd2\xfc;<"


def test_begin_and_commit():
    begin = pgoutput.decode(BEGIN)
    assert begin == pgoutput.Begin(final_lsn=0x2212048, commit_ts_us=848_611_768_023_868,
                                   xid=853)
    assert begin.commit_ms == 1_795_296_568_023  # 2026-11-21T21:29:28.023Z
    assert pgoutput.decode(COMMIT) == pgoutput.Commit(
        flags=0, commit_lsn=0x2212048, end_lsn=0x2212078, commit_ts_us=848_611_768_023_868)


def test_relation():
    rel = pgoutput.decode(RELATION)
    assert (rel.oid, rel.namespace, rel.name, rel.replica_identity) == (16421, "exp2", "t", "f")
    assert [(c.name, c.type_oid, c.type_modifier, c.is_key) for c in rel.columns] == [
        ("id", 25, -1, True), ("j", 3802, -1, True), ("ts", 1184, -1, True),
        ("c", 1042, 6, True)]


def test_insert_update_delete_tuples():
    assert pgoutput.decode(INSERT) == pgoutput.Insert(
        16421, ("a", '{"a": false, "b": true}', "2026-11-01 00:00:00.123+00", "U "))
    update = pgoutput.decode(UPDATE)
    assert (update.old_kind, update.old[3], update.new[3]) == ("O", "U ", "DE")
    assert update.old[:3] == update.new[:3]
    delete = pgoutput.decode(DELETE)
    assert (delete.old_kind, delete.old[0], delete.old[2]) == ("O", "b",
                                                              "2026-11-21 21:29:28.023137+00")


def test_nulls_unchanged_toast_and_skipped_kinds():
    data = b"U\x00\x00\x00\x07N\x00\x03n" + b"u" + b"t\x00\x00\x00\x02hi"
    assert pgoutput.decode(data) == pgoutput.Update(7, None, None, (None, UNCHANGED, "hi"))
    assert pgoutput.decode(b"T\x00\x00\x00\x01\x00\x00\x00\x00\x07") == pgoutput.Skipped("T")
    assert pgoutput.decode(b"Y\x00\x00\x00\x07public\x00mood\x00") == pgoutput.Skipped("Y")


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (BEGIN[:-1], "ends at byte"),
    (BEGIN + b"\x00", "trailing"),
    (INSERT[:-1], "overruns"),
    (b"I\x00\x00@%X\x00\x00", "expected b'N'"),
    (b"D\x00\x00@%N\x00\x00", "expected old tuple"),
    (b"I\x00\x00@%N\x00\x01b\x00\x00\x00\x01x", "not supported"),
    (b"R\x00\x00@%exp2", "unterminated"),
])
def test_malformed_messages_raise(data, message):
    with pytest.raises(DecodeError, match=re.escape(message)):
        pgoutput.decode(data)


def test_text_values_convert_exactly():
    assert pgoutput.timestamptz_to_epoch_ms("2026-11-01 00:00:00.123+00") == 1_793_491_200_123
    assert pgoutput.timestamptz_to_epoch_ms("2026-11-01 05:30:00.5+05:30") == 1_793_491_200_500
    assert pgoutput.timestamptz_to_epoch_ms("2026-10-31 19:00:00-05") == 1_793_491_200_000
    assert pgoutput.timestamptz_to_epoch_ms("2026-11-01 00:00:00.123999+00") == 1_793_491_200_123
    assert pgoutput.timestamptz_to_epoch_ms("1969-12-31 23:59:59.9995+00") == -1
    with pytest.raises(DecodeError):
        pgoutput.timestamptz_to_epoch_ms("infinity")
    assert pgoutput.parse_text(3802, '{"sms": false, "email": true}') == {"sms": False,
                                                                         "email": True}
    assert pgoutput.parse_text(16, "t") is True and pgoutput.parse_text(20, "-4") == -4
    assert pgoutput.parse_text(1042, "U ") == "U " and pgoutput.parse_text(25, None) is None
    assert pgoutput.pg_micros_to_epoch_ms(0) == 946_684_800_000
    assert pgoutput.lsn_to_int("16/B374D848") == 97_500_059_720
    assert pgoutput.int_to_lsn(97_500_059_720) == "16/B374D848"


# --- change records from messages (pure) ----------------------------------------------------

FIELDS = profiles.profile_fields()
_TYPES = {"notification_prefs": 3802, "updated_at": 1184, "home_country": 1042}


def _relation(oid: int = 9) -> bytes:
    cols = b"".join(b"\x01" + name.encode() + b"\0" + struct.pack("!Ii", _TYPES.get(name, 25), -1)
                    for name in FIELDS)
    return (b"R" + struct.pack("!I", oid) + b"mercury\0user_profiles\0f"
            + struct.pack("!h", len(FIELDS)) + cols)


def _tuple(row: dict) -> bytes:
    out = struct.pack("!h", len(FIELDS))
    for name in FIELDS:
        value = row[name].encode()
        out += b"t" + struct.pack("!i", len(value)) + value
    return out


ROW = {"user_id": "usr_1", "full_name": "Ana Smith", "email": "a@example.com",
       "locale": "en-US", "home_country": "US", "risk_tier": "LOW", "kyc_status": "VERIFIED",
       "notification_prefs": '{"push": false, "email": true}',
       "updated_at": "2026-11-01 00:00:00.123+00"}
ROW_AS_RECORD = {**ROW, "notification_prefs": {"push": False, "email": True},
                 "updated_at": 1_793_491_200_123}


def test_change_decoder_builds_the_envelope():
    dec = profiles.ChangeDecoder("mercury", FIELDS)
    assert dec.feed(100, BEGIN) == [] and dec.feed(100, _relation()) == []
    [created] = dec.feed(100, b"I\x00\x00\x00\x09N" + _tuple(ROW))
    assert created == {
        "before": None, "after": ROW_AS_RECORD, "op": "c",
        "source": {"connector": "postgresql", "db": "mercury", "schema": "mercury",
                   "table": "user_profiles", "lsn": 100, "tx_id": 853,
                   "ts_ms": 1_795_296_568_023},
        "ts_ms": 1_795_296_568_023, "key": {"user_id": "usr_1"}}
    assert validator("user_profile_cdc").validate(created).ok
    newer = {**ROW, "risk_tier": "HIGH"}
    [updated] = dec.feed(180, b"U\x00\x00\x00\x09O" + _tuple(ROW) + b"N" + _tuple(newer))
    assert (updated["op"], updated["before"]["risk_tier"], updated["after"]["risk_tier"],
            updated["source"]["lsn"]) == ("u", "LOW", "HIGH", 180)
    [deleted] = dec.feed(260, b"D\x00\x00\x00\x09O" + _tuple(newer))
    # A delete carries the key only: no value of the old row (a name, an e-mail) travels on.
    assert {k: deleted[k] for k in ("op", "before", "after", "key")} == {
        "op": "d", "before": None, "after": None, "key": {"user_id": "usr_1"}}
    assert validator("user_profile_cdc").validate(deleted).ok
    for value in (ROW["full_name"], ROW["email"]):
        assert value.encode() not in orjson.dumps(deleted)
    renamed = {**ROW, "user_id": "usr_2"}
    gone, born = dec.feed(300, b"U\x00\x00\x00\x09O" + _tuple(ROW) + b"N" + _tuple(renamed))
    assert (gone["op"], gone["before"], gone["key"], born["op"], born["after"]["user_id"]) == (
        "d", None, {"user_id": "usr_1"}, "c", "usr_2")
    assert dec.feed(400, COMMIT) == [] and dec.last_commit.end_lsn == 0x2212078


def test_change_decoder_fills_unchanged_toast_from_the_old_row():
    dec = profiles.ChangeDecoder("mercury", FIELDS)
    dec.feed(1, BEGIN)
    dec.feed(1, _relation())
    new = bytearray(_tuple({**ROW, "full_name": "Ana B"}))
    prefs = b'{"push": false, "email": true}'
    at = new.index(b"t" + struct.pack("!i", len(prefs)) + prefs)
    new[at:at + 5 + len(prefs)] = b"u"
    [updated] = dec.feed(2, b"U\x00\x00\x00\x09O" + _tuple(ROW) + b"N" + bytes(new))
    assert updated["after"]["notification_prefs"] == {"push": False, "email": True}
    assert updated["after"]["full_name"] == "Ana B"


def test_change_decoder_refuses_what_it_cannot_represent():
    dec = profiles.ChangeDecoder("mercury", FIELDS)
    with pytest.raises(CdcError, match="outside a transaction"):
        dec.feed(1, b"I\x00\x00\x00\x09N" + _tuple(ROW))
    dec.feed(1, BEGIN)
    with pytest.raises(CdcError, match="never described"):
        dec.feed(1, b"I\x00\x00\x00\x09N" + _tuple(ROW))
    dec.feed(1, _relation())
    with pytest.raises(CdcError, match="REPLICA IDENTITY FULL"):
        dec.feed(2, b"D\x00\x00\x00\x09K" + _tuple(ROW))


def test_targets_are_validated_when_built():
    with pytest.raises(CdcError, match="schema-qualified"):
        CdcTarget(table="user_profiles")
    with pytest.raises(CdcError, match="identifier"):
        CdcTarget(slot="Robert'); DROP TABLE x;--")
    with pytest.raises(KeyError):
        CdcTarget(stream="no_such_stream")


# --- against the real local Postgres --------------------------------------------------------


@pytest.fixture
def pg(tmp_settings):
    from mercury.stack.postgres_server import PostgresServer

    health = PostgresServer(tmp_settings).health()
    if not health.ok:
        pytest.fail(f"postgres is needed: {health.detail}")
    with psycopg.connect(tmp_settings.postgres.conninfo(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def target(pg, tmp_settings):
    """A fresh copy of the profile table in its own schema, with its own slot/publication."""
    tag = f"cdc_test_{uuid.uuid4().hex[:10]}"
    pg.execute(re.sub(r"\bmercury\b", tag, profiles_pg.DDL))
    yield CdcTarget(table=f"{tag}.user_profiles", slot=tag, publication=tag)
    for slot in (tag, f"{tag}_init"):
        if pg.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                      (slot,)).fetchone():
            pg.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    pg.execute(f"DROP PUBLICATION IF EXISTS {tag}")
    pg.execute(f"DROP SCHEMA {tag} CASCADE")


def _insert(pg, target, user_id: str, **changes) -> None:
    row = {**ROW, "user_id": user_id, "email": f"{user_id}@example.com", **changes}
    pg.execute(f"INSERT INTO {target.table} ({', '.join(FIELDS)}) VALUES "
               f"({', '.join(['%s'] * len(FIELDS))})", [row[f] for f in FIELDS])


def _events(settings, stream: str = "user_profile_cdc") -> list[bytes]:
    return [m.value for m in FileEventReader(settings.event_log.root).read(stream)]


def _wal(pg) -> int:
    return pgoutput.lsn_to_int(pg.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])


def _slot_lsns(pg, target) -> tuple[int, int]:
    restart, confirmed = pg.execute(
        "SELECT restart_lsn::text, confirmed_flush_lsn::text FROM pg_replication_slots "
        "WHERE slot_name = %s", (target.slot,)).fetchone()
    return pgoutput.lsn_to_int(restart), pgoutput.lsn_to_int(confirmed)


def test_snapshot_then_insert_update_delete_in_order(pg, target, tmp_settings):
    _insert(pg, target, "usr_b")
    _insert(pg, target, "usr_a", notification_prefs='{"sms": true}')
    first = profiles.pump_once(tmp_settings, target)
    restart, confirmed = _slot_lsns(pg, target)
    assert (first.snapshot_rows, first.changes, first.ops) == (2, 0, {"r": 2})
    assert first.last_lsn == confirmed
    snap = [orjson.loads(raw) for raw in _events(tmp_settings)]
    assert [(r["op"], r["after"]["user_id"]) for r in snap] == [("r", "usr_a"), ("r", "usr_b")]
    assert snap[0]["after"] == {**ROW_AS_RECORD, "user_id": "usr_a",
                                "email": "usr_a@example.com", "notification_prefs": {"sms": True}}
    assert {r["source"]["lsn"] for r in snap} == {restart}  # below every change to come
    assert snap[0]["before"] is None and snap[0]["source"]["tx_id"] is None
    assert snap[0]["source"]["schema"] == target.schema

    bounds = [_wal(pg)]
    _insert(pg, target, "usr_c", updated_at="2026-11-02 08:00:00.001+00")
    bounds.append(_wal(pg))
    pg.execute(f"UPDATE {target.table} SET kyc_status = 'EXPIRED' WHERE user_id = 'usr_a'")
    bounds.append(_wal(pg))
    pg.execute(f"DELETE FROM {target.table} WHERE user_id = 'usr_b'")
    bounds.append(_wal(pg))
    with pg.transaction():
        pg.execute(f"UPDATE {target.table} SET risk_tier = 'MEDIUM' WHERE user_id = 'usr_c'")
        pg.execute(f"UPDATE {target.table} SET risk_tier = 'HIGH' WHERE user_id = 'usr_c'")
    bounds.append(_wal(pg))

    second = profiles.pump_once(tmp_settings, target)
    assert (second.snapshot_rows, second.changes, second.transactions) == (0, 5, 4)
    assert second.ops == {"c": 1, "u": 3, "d": 1}
    assert second.last_lsn == _slot_lsns(pg, target)[1] and second.last_lsn > confirmed
    raws = _events(tmp_settings)[2:]
    changes = [orjson.loads(raw) for raw in raws]
    assert [(r["op"], r["key"]["user_id"]) for r in changes] == [
        ("c", "usr_c"), ("u", "usr_a"), ("d", "usr_b"), ("u", "usr_c"), ("u", "usr_c")]
    lsns = [r["source"]["lsn"] for r in changes]
    assert lsns == sorted(lsns) and len(set(lsns)) == 5 and lsns[0] > restart
    for lsn, low, high in zip(lsns[:3], bounds[:3], bounds[1:4], strict=True):
        assert low <= lsn < high  # each change carries the LSN of its own statement
    assert bounds[3] <= lsns[3] < lsns[4] < bounds[4]
    created, updated, deleted, medium, high = changes
    assert created["before"] is None and created["after"]["updated_at"] == 1_793_606_400_001
    assert (updated["before"]["kyc_status"], updated["after"]["kyc_status"]) == ("VERIFIED",
                                                                                 "EXPIRED")
    assert updated["before"]["notification_prefs"] == {"sms": True}
    assert (deleted["after"], deleted["before"], deleted["key"]) == (
        None, None, {"user_id": "usr_b"})
    assert b"usr_b@example.com" not in raws[2]
    assert (medium["before"]["risk_tier"], medium["after"]["risk_tier"],
            high["before"]["risk_tier"], high["after"]["risk_tier"]) == ("LOW", "MEDIUM",
                                                                         "MEDIUM", "HIGH")
    assert medium["source"]["tx_id"] == high["source"]["tx_id"] != deleted["source"]["tx_id"]
    assert all(r["ts_ms"] == r["source"]["ts_ms"] for r in changes)
    assert all(r["source"]["db"] == tmp_settings.postgres.database for r in changes)
    check = validator("user_profile_cdc")
    assert all(check.validate_bytes(raw).ok for raw in _events(tmp_settings))

    third = profiles.pump_once(tmp_settings, target)
    assert (third.changes, third.transactions, third.last_lsn) == (0, 0, second.last_lsn)
    assert len(_events(tmp_settings)) == 7


def test_a_crash_between_flush_and_advance_replays_identical_bytes(pg, target, tmp_settings,
                                                                    monkeypatch):
    profiles.pump_once(tmp_settings, target)  # creates the slot; empty snapshot
    _insert(pg, target, "usr_1")
    pg.execute(f"UPDATE {target.table} SET locale = 'de-DE' WHERE user_id = 'usr_1'")
    pg.execute(f"DELETE FROM {target.table} WHERE user_id = 'usr_1'")
    _, confirmed = _slot_lsns(pg, target)

    def crash(*args):
        raise RuntimeError("killed after flush")

    monkeypatch.setattr(profiles, "_advance", crash)
    with pytest.raises(RuntimeError, match="killed"):
        profiles.pump_once(tmp_settings, target)
    written = _events(tmp_settings)
    assert len(written) == 3 and _slot_lsns(pg, target)[1] == confirmed  # durable, not acked
    monkeypatch.undo()
    replay = profiles.pump_once(tmp_settings, target)
    assert replay.changes == 3
    assert _events(tmp_settings) == written + written  # the same changes, byte for byte
    assert profiles.pump_once(tmp_settings, target).changes == 0


def test_a_crash_during_the_snapshot_leaves_no_slot_and_the_next_run_snapshots(
        pg, target, tmp_settings, monkeypatch):
    _insert(pg, target, "usr_1")
    real_exec = profiles._exec

    def crash_before_copy(pgconn, statement):
        if "pg_copy_logical_replication_slot" in statement:
            raise RuntimeError("killed after the snapshot flush")
        return real_exec(pgconn, statement)

    monkeypatch.setattr(profiles, "_exec", crash_before_copy)
    with pytest.raises(RuntimeError, match="killed"):
        profiles.pump_once(tmp_settings, target)
    assert profiles.status(tmp_settings, target)["slot_exists"] is False
    assert pg.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE %s",
                      (f"{target.slot}%",)).fetchone()[0] == 0  # the temporary slot went too
    monkeypatch.undo()
    _insert(pg, target, "usr_2")
    again = profiles.pump_once(tmp_settings, target)
    assert again.snapshot_rows == 2
    last_two = [orjson.loads(raw) for raw in _events(tmp_settings)[-2:]]
    assert [(r["op"], r["after"]["user_id"]) for r in last_two] == [("r", "usr_1"),
                                                                    ("r", "usr_2")]


def test_setup_is_idempotent_and_reset_starts_over(pg, target, tmp_settings):
    profiles.ensure_publication(pg, target)
    profiles.ensure_publication(pg, target)
    tables = pg.execute("SELECT schemaname, tablename FROM pg_publication_tables WHERE "
                        "pubname = %s", (target.publication,)).fetchall()
    assert tables == [(target.schema, "user_profiles")]
    _insert(pg, target, "usr_1")
    assert profiles.pump_once(tmp_settings, target).snapshot_rows == 1
    assert profiles.pump_once(tmp_settings, target).snapshot_rows == 0  # slot exists: no redo
    state = profiles.status(tmp_settings, target)
    assert state["slot_exists"] and state["publication_exists"] and state["active_pid"] is None
    assert state["wal_held_bytes"] >= 0
    with profiles.Pump(tmp_settings, target), pytest.raises(CdcError, match="another pump"):
        profiles.Pump(tmp_settings, target)
    assert profiles.reset(tmp_settings, target) == [f"dropped slot {target.slot}",
                                                    f"dropped publication {target.publication}"]
    assert profiles.reset(tmp_settings, target) == ["nothing to drop"]
    again = profiles.pump_once(tmp_settings, target)
    assert again.snapshot_rows == 1 and len(_events(tmp_settings)) == 2


def test_a_table_without_full_replica_identity_is_refused(pg, target):
    pg.execute(f"ALTER TABLE {target.table} REPLICA IDENTITY DEFAULT")
    with pytest.raises(CdcError, match="REPLICA IDENTITY FULL"):
        profiles.ensure_publication(pg, target)
    missing = CdcTarget(table=f"{target.schema}.nope", slot=target.slot,
                        publication=target.publication)
    with pytest.raises(CdcError, match="does not exist"):
        profiles.ensure_publication(pg, missing)


def test_invalid_rows_go_to_the_dead_letter_stream(pg, target, tmp_settings):
    profiles.pump_once(tmp_settings, target)
    _insert(pg, target, "usr_ok")
    _insert(pg, target, "usr_bad", home_country="ZZ")
    result = profiles.pump_once(tmp_settings, target)
    assert (result.changes, result.dead_letters, result.ops) == (2, 1, {"c": 1})
    [good] = [orjson.loads(raw) for raw in _events(tmp_settings)]
    assert good["after"]["user_id"] == "usr_ok"
    [letter] = [orjson.loads(raw) for raw in _events(tmp_settings, "user_profile_cdc.dlq")]
    assert (letter["rule"], letter["field"]) == ("bad_country", "after.home_country")
    assert orjson.loads(letter["raw_payload"])["after"]["user_id"] == "usr_bad"


def test_batches_end_at_transactions_and_follow_stops_when_idle(pg, target, tmp_settings):
    profiles.pump_once(tmp_settings, target)
    for i in range(5):
        _insert(pg, target, f"usr_{i}")
    small = profiles.pump_once(tmp_settings, target, max_changes=3)
    assert (small.transactions, small.changes) == (1, 1)  # Begin+Relation+Insert+Commit >= 3
    seen, sleeps = [], []
    total = profiles.follow(tmp_settings, target, max_changes=3, stop=profiles.stop_when_idle(2),
                            on_batch=seen.append, sleep=sleeps.append, poll_interval_s=0.25)
    assert total.changes == 4 and [b.changes for b in seen] == [1, 1, 1, 1, 0, 0]
    assert sleeps == [0.25]  # only after an empty poll, and not after the last one
    ids = [orjson.loads(raw)["after"]["user_id"] for raw in _events(tmp_settings)]
    assert ids == [f"usr_{i}" for i in range(5)]


def test_cli_registers_the_cdc_command():
    import argparse

    from mercury.cdc import cli

    parser = argparse.ArgumentParser(prog="mercury")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cdc", "pump", "--follow", "--max-changes", "50",
                              "--idle-exit", "3"])
    assert (args.follow, args.max_changes, args.idle_exit, args.run) == (True, 50, 3, cli._pump)
    assert parser.parse_args(["cdc", "reset"]).run is cli._reset
    assert parser.parse_args(["cdc", "status"]).run is cli._status
    with pytest.raises(SystemExit):
        parser.parse_args(["cdc", "pump", "--max-changes", "0"])


def test_a_quiet_table_gets_a_heartbeat_so_the_slot_still_advances(pg, target, tmp_settings):
    profiles.pump_once(tmp_settings, target)
    pg.execute(f"CREATE TABLE {target.schema}.elsewhere (n int)")  # WAL the slot must not hold
    pg.execute(f"INSERT INTO {target.schema}.elsewhere SELECT generate_series(1, 1000)")
    _, confirmed = _slot_lsns(pg, target)
    quiet = profiles.pump_once(tmp_settings, target, heartbeat_bytes=10**9)
    assert (quiet.transactions, quiet.last_lsn) == (0, confirmed)  # skipped, nothing to ack
    assert profiles.pump_once(tmp_settings, target, heartbeat_bytes=0).transactions == 0
    beat = profiles.pump_once(tmp_settings, target, heartbeat_bytes=10**9)
    assert (beat.transactions, beat.changes, beat.ops) == (1, 0, {})
    assert beat.last_lsn == _slot_lsns(pg, target)[1] > confirmed
    assert _events(tmp_settings) == [] and profiles._idle(beat)

"""Compaction of the streaming job's staged part files into Iceberg: exact rows, idempotent,
committed files only, moved to _compacted/ once committed."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from mercury.lake import compact, tables
from mercury.lake.compact_cli import register
from tests.lake_fixtures import BASE_MS, transaction, utc

DAY_MS = 86_400_000


def stage(settings, kind: str, name: str, entries: list[dict], age_s: int = 0) -> Path:
    """A staged file as the streaming job leaves it; ``age_s`` orders files by mtime."""
    folder = compact.staging_dir(settings) / kind
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    stamp = 1_700_000_000 + age_s
    os.utime(path, (stamp, stamp))
    return path


def valid(stream: str, record: dict, position: str) -> dict:
    return {"stream": stream, "position": position, "record": record}


def late(stream: str, record: dict, position: str, event_ts: int, watermark: int) -> dict:
    return {"stream": stream, "position": position, "watermark": watermark,
            "event_ts": event_ts, "record": record}


def profile_change(lsn: int, user_id: str, op: str = "u", **after) -> dict:
    """A validated user_profile_cdc record (defaults filled, times in ms)."""
    row = {"user_id": user_id, "full_name": "Ada Lovelace", "email": f"{user_id}@example.com",
           "locale": "en-GB", "home_country": "GB", "risk_tier": "LOW", "kyc_status": "VERIFIED",
           "notification_prefs": {"email": True}, "updated_at": BASE_MS + lsn}
    row.update(after)
    return {"before": None, "after": row, "op": op,
            "source": {"connector": "pgoutput", "db": "mercury", "schema": "mercury",
                       "table": "user_profiles", "lsn": lsn, "tx_id": 7, "ts_ms": BASE_MS + lsn},
            "ts_ms": BASE_MS + lsn}


def expected_row(subject: str, record: dict) -> dict:
    """The row a record becomes: the contract's columns only, times as UTC datetimes."""
    return {f.name: _cell(f.type, record.get(f.name)) for f in tables.arrow_schema(subject)}


def _cell(dtype: pa.DataType, value):
    if value is None:
        return None
    if pa.types.is_timestamp(dtype):
        return utc(value)
    if pa.types.is_struct(dtype):
        return {dtype.field(i).name: _cell(dtype.field(i).type, value.get(dtype.field(i).name))
                for i in range(dtype.num_fields)}
    if pa.types.is_map(dtype):
        return [(k, _cell(dtype.item_type, v)) for k, v in value.items()]
    return value


def rows(table: pa.Table, *keys: str) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: tuple(_path(r, k) for k in keys))


def _path(row: dict, dotted: str):
    for part in dotted.split("."):
        row = (row or {}).get(part)
    return row


def snapshots(settings) -> dict[str, int | None]:
    cat = tables.catalog(settings)
    names = ["raw.transactions", "raw.user_profile_changes", compact.LATE_EVENTS_TABLE]
    return {name: cat.load_table(name).current_snapshot().snapshot_id for name in names}


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def staged(tmp_settings):
    """Two committed validated files, an in-progress one, and a late-events file."""
    t = {n: transaction(n) for n in range(6)}
    t1_evolved = {**t[1], "loyalty_tier": "gold", "device": {"os": "ios"}}
    snapshot = profile_change(100, "usr_1", op="r")
    update = profile_change(200, "usr_1", risk_tier="HIGH")
    stage(tmp_settings, "validated", "part-a1-0-0.jsonl", [
        valid("transactions", t[0], "transactions/part-g-1.jsonl:1"),
        valid("transactions", t1_evolved, "transactions/part-g-1.jsonl:2"),
        valid("transactions", t[2], "transactions/part-g-1.jsonl:3"),
        valid("user_profile_cdc", snapshot, "user_profile_cdc/part-c-1.jsonl:1"),
    ], age_s=0)
    stage(tmp_settings, "validated", "part-a1-0-1.jsonl", [
        valid("transactions", t[2], "transactions/part-g-2.jsonl:1"),  # producer retry
        valid("transactions", t[3], "transactions/part-g-2.jsonl:2"),
        valid("user_profile_cdc", snapshot, "user_profile_cdc/part-c-2.jsonl:1"),  # CDC replay
        valid("user_profile_cdc", update, "user_profile_cdc/part-c-2.jsonl:2"),
    ], age_s=10)
    # Not committed yet: Flink's in-progress file must not be read, moved or deleted.
    stage(tmp_settings, "validated", ".part-a1-0-2.jsonl.inprogress.5f1e", [
        valid("transactions", t[4], "transactions/part-g-3.jsonl:1")], age_s=20)
    watermark = BASE_MS + 40 * DAY_MS
    stage(tmp_settings, "late", "part-b7-0-0.jsonl", [
        # One late event routed to two entities (user and merchant): two lines, one event.
        late("transactions", t[5], "transactions/part-g-2.jsonl:3", t[5]["event_ts"], watermark),
        late("transactions", t[5], "transactions/part-g-2.jsonl:3", t[5]["event_ts"], watermark),
        late("user_profile_cdc", profile_change(300, "usr_2"), "user_profile_cdc/part-c-2.jsonl:3",
             BASE_MS + 300, watermark),
    ], age_s=5)
    return {"t": t, "t1_evolved": t1_evolved, "snapshot": snapshot, "update": update,
            "watermark": watermark}


def test_compact_writes_exact_rows_and_moves_committed_files(tmp_settings, staged):
    t = staged["t"]
    result = compact.compact(tmp_settings)

    # raw.transactions: each event once, the contract's columns only.
    stored = tables.read(tmp_settings, "transactions")
    assert "loyalty_tier" not in stored.column_names and "device" not in stored.column_names
    assert rows(stored, "event_id") == sorted(
        (expected_row("transaction", t[n]) for n in range(4)), key=lambda r: r["event_id"])
    assert rows(stored, "event_id")[1]["event_ts"] == utc(BASE_MS + 60_000)

    # raw.user_profile_changes: keyed by (source.lsn, user_id); the replayed snapshot row once.
    changes = tables.read(tmp_settings, "user_profile_cdc")
    assert rows(changes, "source.lsn") == [
        expected_row("user_profile_cdc", staged["snapshot"]),
        expected_row("user_profile_cdc", staged["update"])]

    # quality.late_events: one row per (stream, event id), the record whole in the payload.
    late_rows = rows(compact.read_late_events(tmp_settings), "stream")
    cdc_late = profile_change(300, "usr_2")
    assert late_rows == [
        {"stream": "transactions", "event_id": t[5]["event_id"], "event_ts": utc(t[5]["event_ts"]),
         "watermark": utc(staged["watermark"]), "ingest_ts": utc(t[5]["ingest_ts"]),
         "position": "transactions/part-g-2.jsonl:3",
         "payload": orjson.dumps(t[5], option=orjson.OPT_SORT_KEYS).decode()},
        {"stream": "user_profile_cdc", "event_id": "300:usr_2", "event_ts": utc(BASE_MS + 300),
         "watermark": utc(staged["watermark"]), "ingest_ts": None,
         "position": "user_profile_cdc/part-c-2.jsonl:3",
         "payload": orjson.dumps(cdc_late, option=orjson.OPT_SORT_KEYS).decode()},
    ]
    late_table = tables.catalog(tmp_settings).load_table(compact.LATE_EVENTS_TABLE)
    assert [(f.name, str(f.transform)) for f in late_table.spec().fields] == [
        ("event_ts_day", "day")]

    # The counts say what happened.
    assert result.files == 3
    assert result.validated["transactions"] == compact.Counts(
        read=5, inserted=4, collapsed=1, with_unknown_fields=1)
    assert result.validated["user_profile_cdc"] == compact.Counts(read=3, inserted=2, collapsed=1)
    assert result.late["transactions"] == compact.Counts(read=2, inserted=1, collapsed=1)
    assert result.late["user_profile_cdc"] == compact.Counts(read=1, inserted=1)
    assert result.unknown_fields == {"transactions.loyalty_tier": 1, "transactions.device": 1}
    assert not result.unkeyed and not result.held_files

    # Committed files moved; the in-progress file untouched.
    root = compact.staging_dir(tmp_settings)
    assert listing(root / "validated") == [".part-a1-0-2.jsonl.inprogress.5f1e", "_compacted"]
    assert listing(root / "validated" / "_compacted") == ["part-a1-0-0.jsonl",
                                                          "part-a1-0-1.jsonl"]
    assert listing(root / "late") == ["_compacted"]
    assert listing(root / "late" / "_compacted") == ["part-b7-0-0.jsonl"]

    # Again: nothing staged, nothing changes.
    before = snapshots(tmp_settings)
    again = compact.compact(tmp_settings)
    assert again == compact.CompactResult()
    assert snapshots(tmp_settings) == before


def test_a_file_compacted_twice_or_a_late_duplicate_changes_nothing(tmp_settings, staged):
    compact.compact(tmp_settings)
    before = snapshots(tmp_settings)
    tables_before = {s: tables.read(tmp_settings, s) for s in ("transactions", "user_profile_cdc")}
    late_before = compact.read_late_events(tmp_settings)

    # A crash between the Iceberg commit and the move: the files are still staged.
    root = compact.staging_dir(tmp_settings)
    for kind in ("validated", "late"):
        for path in (root / kind / "_compacted").iterdir():
            shutil.copy2(path, root / kind / path.name)
    result = compact.compact(tmp_settings)
    assert result.files == 3
    assert result.validated["transactions"] == compact.Counts(
        read=5, already_stored=4, collapsed=1, with_unknown_fields=1)
    assert result.validated["user_profile_cdc"] == compact.Counts(
        read=3, already_stored=2, collapsed=1)
    assert result.late["transactions"] == compact.Counts(read=2, already_stored=1, collapsed=1)
    assert result.late["user_profile_cdc"] == compact.Counts(read=1, already_stored=1)
    assert snapshots(tmp_settings) == before
    # Identical files are not archived twice.
    assert listing(root / "validated" / "_compacted") == ["part-a1-0-0.jsonl",
                                                          "part-a1-0-1.jsonl"]
    assert listing(root / "late" / "_compacted") == ["part-b7-0-0.jsonl"]
    assert listing(root / "validated") == [".part-a1-0-2.jsonl.inprogress.5f1e", "_compacted"]

    # A copy of event 0 that reached the stream 3 days later, past the streaming dedup
    # horizon, with a different payload; and a late copy of event 5 found again.
    retry = transaction(0, amount=999.0, ingest_ts=staged["t"][0]["ingest_ts"] + 3 * DAY_MS)
    stage(tmp_settings, "validated", "part-c9-0-0.jsonl",
          [valid("transactions", retry, "transactions/part-g-9.jsonl:1")], age_s=30)
    t5 = staged["t"][5]
    stage(tmp_settings, "late", "part-c9-0-0.jsonl", [
        late("transactions", {**t5, "ingest_ts": t5["ingest_ts"] + DAY_MS},
             "transactions/part-g-9.jsonl:2", t5["event_ts"], staged["watermark"] + DAY_MS)],
        age_s=30)
    result = compact.compact(tmp_settings)
    assert result.validated["transactions"] == compact.Counts(read=1, already_stored=1)
    assert result.late["transactions"] == compact.Counts(read=1, already_stored=1)
    assert snapshots(tmp_settings) == before
    for stream, table in tables_before.items():
        assert tables.read(tmp_settings, stream).equals(table)
    assert compact.read_late_events(tmp_settings).equals(late_before)
    assert listing(root / "validated" / "_compacted")[-1] == "part-c9-0-0.jsonl"


def test_small_batches_commit_file_by_file_with_the_same_result(tmp_settings, staged):
    seen = []
    result = compact.compact(tmp_settings, progress=seen.append, batch_records=1)
    assert [batch.files for batch in seen] == [1, 1, 1]
    assert result.files == 3
    # The retry sits in the second file, so it meets its stored twin instead of a batch-mate.
    assert result.validated["transactions"] == compact.Counts(
        read=5, inserted=4, already_stored=1, with_unknown_fields=1)
    assert sorted(tables.read(tmp_settings, "transactions").column("event_id").to_pylist()) == \
        sorted(staged["t"][n]["event_id"] for n in range(4))
    assert seen[0].line().startswith("1 file(s); validated 4 read, 4 new")


def test_records_without_a_key_hold_their_file_but_the_rest_is_committed(tmp_settings):
    no_rows = {**profile_change(400, "usr_3"), "after": None}  # valid, yet nothing to key on
    held = stage(tmp_settings, "validated", "part-d1-0-0.jsonl", [
        valid("transactions", transaction(0), "transactions/part-g-1.jsonl:1"),
        valid("user_profile_cdc", no_rows, "user_profile_cdc/part-c-4.jsonl:1"),
        valid("payouts", {"event_id": "x"}, "payouts/part-p-1.jsonl:1"),  # not in the registry
    ])
    result = compact.compact(tmp_settings)
    assert result.unkeyed == {"user_profile_cdc": 1, "payouts": 1}
    assert result.held_files == [str(held)] and result.files == 0
    assert held.exists()
    assert tables.read(tmp_settings, "transactions").num_rows == 1
    assert any("have no key" in line for line in result.summary())


def test_a_malformed_line_stops_the_batch_naming_file_and_line(tmp_settings):
    good = stage(tmp_settings, "validated", "part-e1-0-0.jsonl",
                 [valid("transactions", transaction(0), "transactions/part-g-1.jsonl:1")])
    bad = compact.staging_dir(tmp_settings) / "validated" / "part-e1-0-1.jsonl"
    bad.write_bytes(orjson.dumps(valid("transactions", transaction(1), "p:1")) + b'\n{"stre\n')
    with pytest.raises(compact.CompactError, match=r"part-e1-0-1\.jsonl:2: not JSON"):
        compact.compact(tmp_settings)
    assert good.exists() and bad.exists()
    missing = stage(tmp_settings, "late", "part-e2-0-0.jsonl",
                    [valid("transactions", transaction(2), "p:2")])  # no watermark
    bad.unlink()
    with pytest.raises(compact.CompactError, match=r"part-e2-0-0\.jsonl:1: a late line needs "
                                                   r"'watermark'"):
        compact.compact(tmp_settings)
    assert missing.exists()


def test_unknown_fields_are_found_at_any_depth():
    columns = tables.arrow_schema("user_profile_cdc")
    record = profile_change(1, "usr_1", nickname="ada")
    record["source"]["xmin"] = 3
    record["shard"] = 2
    assert compact.unknown_fields(record, columns) == ["shard", "after.nickname", "source.xmin"]
    assert compact.unknown_fields(profile_change(1, "usr_1"), columns) == []


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mercury")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_prints_batches_and_a_summary(tmp_settings, staged, capsys):
    assert _cli(["lake-compact"]) == 0
    out = capsys.readouterr().out
    assert "batch: 2 file(s); validated 8 read, 6 new" in out
    assert "transactions -> raw.transactions: read 5, new 4" in out
    assert "user_profile_cdc -> quality.late_events: read 1, new 1" in out
    assert "unknown fields: transactions.loyalty_tier 1, transactions.device 1" in out
    assert _cli(["lake-compact", "--quiet"]) == 0
    assert "nothing to compact" in capsys.readouterr().out


def test_cli_exits_1_when_files_stay_staged(tmp_settings, capsys):
    stage(tmp_settings, "validated", "part-f1-0-0.jsonl",
          [valid("payouts", {"event_id": "x"}, "payouts/part-p-1.jsonl:1")])
    assert _cli(["lake-compact", "--batch-records", "10"]) == 1
    captured = capsys.readouterr()
    assert "1 file(s) stay staged" in captured.err
    assert "1 record(s) of payouts have no key" in captured.out
    with pytest.raises(SystemExit):
        _cli(["lake-compact", "--batch-records", "0"])

"""Replaying dead letters: after the cause is fixed exactly the fixed records come back, with
their original bytes, once (also when two replays run at once); the rest stay and are counted
per rule. The ledger is in the real local Postgres (a schema per test).

The story: ISO 4217 added ZWG (Zimbabwe Gold) in 2024 and the code list lacked it, so
transactions in ZWG were dead-lettered as bad_currency until the list was fixed.
"""

from __future__ import annotations

import argparse
import io
import threading
import time

import orjson
import pytest

from mercury.config import load_settings
from mercury.contracts import validation
from mercury.eventlog import open_producer
from mercury.eventlog.file_log import FileEventReader
from mercury.lake import tables
from mercury.lake.load import load_stream
from mercury.ops import state
from mercury.quality import replay_cli
from mercury.quality.replay import ReplayError, replay_dead_letters
from mercury.quality.replay_ledger import entries
from tests.conftest import write_config
from tests.lake_fixtures import transaction


def _payloads() -> dict[str, list[bytes]]:
    def payload(n: int, **overrides) -> bytes:
        return orjson.dumps(transaction(n, **overrides))

    return {
        "valid": [payload(n) for n in range(3)],
        "zwg": [payload(n, currency="ZWG", country="ZW") for n in range(3, 6)],
        "not_json": [payload(6)[:40], payload(7)[:-3]],
        "unknown_enum": [payload(8, event_type="REFUND")],
    }


@pytest.fixture
def dead_lettered(tmp_settings):
    """The transactions stream with bad records in it, loaded: the bad ones are dead letters."""
    payloads = _payloads()
    with open_producer(tmp_settings, writer_id="src") as producer:
        for kind in ("valid", "zwg", "not_json", "unknown_enum"):
            for raw in payloads[kind]:
                producer.send("transactions", raw)
    report = load_stream(tmp_settings, "transactions")
    assert dict(report.dead_letters) == {"bad_currency": 3, "not_json": 2, "unknown_enum": 1}
    return payloads


def fix_zwg(monkeypatch) -> None:
    """The fix: the currency code list as the validator reads it now has ZWG."""
    monkeypatch.setattr(validation, "CURRENCIES", validation.CURRENCIES | {"ZWG"})
    validation.validator.cache_clear()  # no validator built before the fix survives it


@pytest.fixture
def zwg_fixed(monkeypatch):
    fix_zwg(monkeypatch)
    yield
    validation.validator.cache_clear()


def _stream(settings, writer: str = "") -> list[bytes]:
    """The stream's payloads, in file-name order; only ``writer``'s files if given."""
    return [m.value for m in FileEventReader(settings.event_log.root).read("transactions")
            if f"/part-{writer}" in m.position]


def test_nothing_comes_back_before_the_fix(tmp_settings, dead_lettered):
    result = replay_dead_letters(tmp_settings, "transactions")
    assert (result.read, result.replayed, result.already_replayed) == (6, 0, 0)
    assert result.still_failing == {"bad_currency": 3, "not_json": 2, "unknown_enum": 1}


def test_fixed_records_come_back_byte_identical_once(tmp_settings, dead_lettered, zwg_fixed):
    before = _stream(tmp_settings)
    dry = replay_dead_letters(tmp_settings, "transactions", dry_run=True)
    assert (dry.replayed, dry.still_failing) == (3, {"not_json": 2, "unknown_enum": 1})
    assert _stream(tmp_settings) == before and entries(tmp_settings, "transactions") == []

    seen = []
    result = replay_dead_letters(tmp_settings, "transactions", batch_size=2,
                                 progress=lambda r: seen.append(r.read))
    assert (result.read, result.replayed, result.already_replayed) == (6, 3, 0)
    assert result.still_failing == {"not_json": 2, "unknown_enum": 1}
    assert seen == [2, 4, 6]
    after = _stream(tmp_settings)
    assert len(after) == len(before) + 3
    assert _stream(tmp_settings, "dlqreplay") == dead_lettered["zwg"]  # original bytes, in order
    ledger = entries(tmp_settings, "transactions")
    assert [entry["rule"] for entry in ledger] == ["bad_currency"] * 3
    assert [entry["event_id"] for entry in ledger] == [
        orjson.loads(raw)["event_id"] for raw in dead_lettered["zwg"]]

    again = replay_dead_letters(tmp_settings, "transactions")
    assert (again.replayed, again.already_replayed) == (0, 3)
    assert again.still_failing == {"not_json": 2, "unknown_enum": 1}
    assert _stream(tmp_settings) == after
    assert "already replayed 3" in again.summary()
    assert again.as_dict()["still_failing"] == {"not_json": 2, "unknown_enum": 1}

    # Downstream, the replayed records are simply valid now: the loader takes them in.
    load = load_stream(tmp_settings, "transactions")
    assert (load.read, load.inserted, sum(load.dead_letters.values())) == (3, 3, 0)
    assert tables.read(tmp_settings, "transactions").num_rows == 6


def test_a_dead_letter_written_twice_is_replayed_once(tmp_settings, dead_lettered, monkeypatch):
    load_stream(tmp_settings, "transactions", group="rerun")  # the same failures, again
    fix_zwg(monkeypatch)
    result = replay_dead_letters(tmp_settings, "transactions")
    assert (result.read, result.replayed, result.repeated) == (12, 3, 6)


def test_a_wiped_and_refilled_log_starts_a_fresh_ledger(tmp_settings, dead_lettered, zwg_fixed,
                                                        monkeypatch):
    """Dead-letter ids come from log positions, which a new local log reuses (the demo wipes
    it every run). Catches a ledger keyed by id alone: the new log's fixed dead letters, at
    the same positions, would count as replayed already and never come back."""
    import shutil

    assert replay_dead_letters(tmp_settings, "transactions").replayed == 3
    shutil.rmtree(tmp_settings.event_log.root)
    shutil.rmtree(tmp_settings.lake.warehouse)
    monkeypatch.setattr(validation, "CURRENCIES", validation.CURRENCIES - {"ZWG"})
    validation.validator.cache_clear()
    with open_producer(tmp_settings, writer_id="src") as producer:  # the same records again
        for kind in ("valid", "zwg", "not_json", "unknown_enum"):
            for raw in dead_lettered[kind]:
                producer.send("transactions", raw)
    assert load_stream(tmp_settings, "transactions").dead_letters["bad_currency"] == 3
    fix_zwg(monkeypatch)
    result = replay_dead_letters(tmp_settings, "transactions")
    assert (result.replayed, result.already_replayed) == (3, 0)
    assert len(entries(tmp_settings, "transactions")) == 3  # this log's only


def test_a_record_produced_but_not_recorded_is_replayed_again(
        tmp_settings, dead_lettered, zwg_fixed):
    """A worker that died between the flush and the ledger's commit: its record is produced
    again by the next replay (at least once), and the lake's upsert keeps one delivery."""
    replay_dead_letters(tmp_settings, "transactions")
    last = entries(tmp_settings, "transactions")[-1]
    with state.connect(tmp_settings) as conn:
        conn.execute(f"DELETE FROM {tmp_settings.ops_state.schema_name}.dlq_replay_ledger "
                     "WHERE dlq_id = %s", (last["dlq_id"],))
    result = replay_dead_letters(tmp_settings, "transactions")
    assert (result.replayed, result.already_replayed) == (1, 2)
    assert [e["dlq_id"] for e in entries(tmp_settings, "transactions")][-1] == last["dlq_id"]
    load_stream(tmp_settings, "transactions")
    assert tables.read(tmp_settings, "transactions").num_rows == 6


def test_a_ledger_left_on_disk_by_an_earlier_release_is_imported_once(
        tmp_settings, dead_lettered, zwg_fixed):
    """Catches an upgrade replaying everything again: the file ledger of the release before
    the shared store is moved into it (a torn last line dropped: that record comes back)."""
    replay_dead_letters(tmp_settings, "transactions")
    recorded = entries(tmp_settings, "transactions")
    with state.connect(tmp_settings) as conn:
        conn.execute(f"DELETE FROM {tmp_settings.ops_state.schema_name}.dlq_replay_ledger")
    path = tmp_settings.event_log.root / "_replays" / "transactions.jsonl"
    path.parent.mkdir(parents=True)
    lines = [orjson.dumps(entry) + b"\n" for entry in recorded]
    path.write_bytes(b"".join(lines[:2]) + lines[2][:20])  # a crash mid-write of the last
    result = replay_dead_letters(tmp_settings, "transactions")
    assert (result.replayed, result.already_replayed) == (1, 2)
    assert entries(tmp_settings, "transactions")[:2] == recorded[:2]
    assert not path.exists() and path.with_name("transactions.jsonl.imported").is_file()


def test_two_replays_at_once_replay_each_record_once(tmp_settings, dead_lettered, zwg_fixed):
    """Two workers (threads, each with its own Postgres connection) replay the stream at the
    same time: the second starts while the first is between batches, waits for the stream's
    lock, then finds all three recorded. Catches an unlocked ledger (six produced) and a lock
    that refuses instead of waiting (the second worker's task would fail)."""
    first_started = threading.Event()
    results = {}

    def slow_progress(result) -> None:
        first_started.set()
        time.sleep(0.3)            # a batch's worth of work while holding the lock

    def first() -> None:
        results["first"] = replay_dead_letters(tmp_settings, "transactions", batch_size=1,
                                               progress=slow_progress)

    def second() -> None:
        results["second"] = replay_dead_letters(tmp_settings, "transactions")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_started.wait(20)
    threads[1].start()
    for thread in threads:
        thread.join(60)
    assert (results["first"].replayed, results["first"].already_replayed) == (3, 0)
    assert (results["second"].replayed, results["second"].already_replayed) == (0, 3)
    assert _stream(tmp_settings, "dlqreplay") == dead_lettered["zwg"]
    assert len(entries(tmp_settings, "transactions")) == 3


def test_a_replay_waits_for_another_no_longer_than_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("MERCURY_CONFIG",
                       str(write_config(tmp_path, ops_state={"lock_wait_s": 0.3})))
    settings = load_settings()
    with state.connect(settings) as other, state.held(other, settings, "replay",
                                                      "transactions"):
        with pytest.raises(ReplayError, match=r"replay lock of 'transactions' for over 0.3s"):
            replay_dead_letters(settings, "transactions")
        replay_dead_letters(settings, "transactions", dry_run=True)  # reads only


def test_a_stream_without_dead_letters_is_refused(tmp_settings):
    with pytest.raises(ReplayError, match="no dead-letter stream"):
        replay_dead_letters(tmp_settings, "transactions.dlq")


def test_cli_prints_the_summary(tmp_settings, dead_lettered, zwg_fixed, capsys):
    parser = argparse.ArgumentParser(prog="mercury")
    replay_cli.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> str:
        args = parser.parse_args(argv)
        assert args.run(args) == 0
        return capsys.readouterr().out

    assert run("dlq", "replay", "--stream", "transactions", "--dry-run") == (
        "dry run: transactions: read 6 dead letters, would replay 3, already replayed 0, "
        "still failing 3 (not_json 2, unknown_enum 1)\n")
    assert "replayed 3," in run("dlq", "replay", "--stream", "transactions")
    assert "already replayed 3," in run("dlq", "replay", "--stream", "transactions")


def test_progress_printer_writes_at_most_every_interval():
    from mercury.quality.replay import ReplayResult, progress_printer

    out = io.StringIO()
    report = progress_printer(out, every_s=0.0)
    report(ReplayResult("transactions", dry_run=False, read=5, replayed=2))
    assert out.getvalue().startswith("... transactions: read 5 dead letters, replayed 2")
    quiet = progress_printer(out, every_s=3600)
    quiet(ReplayResult("transactions", dry_run=False))
    assert out.getvalue().count("\n") == 1


def test_a_replayed_record_comes_back_without_its_sensitive_fields(tmp_settings, monkeypatch):
    """Catches replay re-sending the raw bytes of a record whose pan the contract drops: the
    dead letter keeps it (raw_payload is classed personal), the stream must not again."""
    pan = "4111111111111111"
    leaky = orjson.dumps(transaction(20, currency="ZWG", country="ZW", pan=pan))
    with open_producer(tmp_settings, writer_id="src") as producer:
        producer.send("transactions", leaky)
    load_stream(tmp_settings, "transactions")
    fix_zwg(monkeypatch)
    try:
        assert replay_dead_letters(tmp_settings, "transactions").replayed == 1
    finally:
        validation.validator.cache_clear()
    [replayed] = _stream(tmp_settings, "dlqreplay")
    assert pan.encode() not in replayed
    assert orjson.loads(replayed)["event_id"] == orjson.loads(leaky)["event_id"]

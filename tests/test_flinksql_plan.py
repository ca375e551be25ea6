"""The SQL job's compiler and writer, without Flink: what the SQL says and what the writer
makes of its rows. The SQL itself runs in tests/flink/test_sql_contract.py (the contract
check) and tests/test_online_features_job.py (the whole job, held to the reference)."""

from __future__ import annotations

import orjson
import pytest

from mercury.features.definition.compile import load_compiled
from mercury.features.definition.dsl import Filter
from mercury.features.definitions.assistant import declines, purchases, risk, spending
from mercury.features.executors.flinksql.contract import compile_contract, tagged_fields
from mercury.features.executors.flinksql.plan import compile_job, filter_sql, retention_ms
from mercury.features.executors.flinksql.writes import PART, PICK, OnlineWrites
from mercury.online import layout
from mercury.online.memory_store import MemoryOnlineStore

SEP = "\x1f"


def test_every_compiled_set_compiles_to_one_readable_plan():
    plan = compile_job(load_compiled())
    text = plan.explain()
    assert plan.streams == ("risk_signals", "transactions", "user_activity", "user_profile_cdc")
    for stream in plan.streams:
        for view in ("checked", "judged", "valid", "records", "events", "first", "counted",
                     "parts"):
            assert f"CREATE TEMPORARY VIEW {view}_{stream} AS" in text
        assert f"INSERT INTO dlq_{stream}_dlq" in text
    # per-event work is SQL; Python only judges the lines the check leaves, and writes
    assert text.count("validate_line(") == 4 and text.count("write_online(") == 1
    # the CDC envelope has nested records: every one of its lines goes to the validator
    assert "FALSE AS fast" in text.split("checked_user_profile_cdc AS")[1].split(";")[0]
    for fs in load_compiled():
        for feature in fs.features:
            assert f"'{feature.name}'" in text, (fs.ref, feature.name)


def test_sets_of_one_stream_must_share_their_entity_key():
    from dataclasses import replace

    from mercury.features.definition.dsl import Entity

    merchant_keyed = replace(declines, entity=Entity("merchant", "merchant_id", "m"))
    with pytest.raises(ValueError, match="share an entity key"):
        compile_job([spending, merchant_keyed])


def test_filters_treat_null_as_the_python_filters_do():
    assert filter_sql(Filter("x", "ne", "A")) == "(x IS NULL OR x <> 'A')"
    assert filter_sql(Filter("x", "not_in", ("A", "B"))) == "(x IS NULL OR x NOT IN ('A', 'B'))"
    assert filter_sql(Filter("x", "eq", "O'Neil")) == "x = 'O''Neil'"


def test_state_outlives_every_window_ttl_and_the_lateness_bound():
    day = 86_400_000
    assert retention_ms(spending) == (35 + 30 + 1) * day
    assert retention_ms(risk) == (8 + 30 + 1) * day


def test_the_contract_types_nested_records_by_path():
    contract = compile_contract("user_profile_cdc")
    assert contract.fast_check == "FALSE"
    assert contract.column("after.user_id").sql_type == "STRING"
    assert contract.column("source.lsn").sql_type == "BIGINT"
    tagged = tagged_fields({"op": "u", "after": {"user_id": "u1", "n": 2, "ok": True},
                            "before": None, "x": 1.5, "l": [1]})
    assert tagged == {"op": "su", "after": 'o{"user_id":"u1","n":2,"ok":true}',
                      "after.user_id": "su1", "after.n": "n2", "after.ok": "t", "before": "z",
                      "x": "n1.5", "l": "a[1]"}


# ---- the writer -------------------------------------------------------------------------------


def _write(rows, sets=(spending, purchases, risk)) -> MemoryOnlineStore:
    store = MemoryOnlineStore()
    store.write(OnlineWrites(list(sets)).key_writes(rows))
    return store


def _fields(store, fs, entity="u1"):
    return store.hashes[layout.entity_key(fs, entity)]


def test_a_tile_becomes_the_layout_of_the_python_path():
    payload = orjson.dumps({
        f"settled_amount{SEP}EUR": "12.5", f"settled_count{SEP}": "2",
        f"average_purchase{SEP}EUR": "[30.0,2]", f"largest_purchase{SEP}EUR": "20.0",
        f"merchants{SEP}{PART}m2": "1", f"merchants{SEP}{PART}m1": "1",
        f"settled_by_category{SEP}groceries{SEP}EUR": "7.25"}).decode()
    store = _write([("spending.v1", "u1", "t", "3600000:498356", payload)])
    tile = orjson.loads(_fields(store, spending)[layout.tile_field(3_600_000, 498356)])
    assert tile == {"settled_amount": {"EUR": 12.5}, "settled_count": {"": 2},
                    "average_purchase": {"EUR": [30.0, 2]}, "largest_purchase": {"EUR": 20.0},
                    "merchants": {"": ["m1", "m2"]},
                    "settled_by_category": {f"groceries{SEP}EUR": 7.25}}


def test_latest_values_keep_deletes_and_expiry():
    pick = "0001793491659648e1" + PICK + orjson.dumps(
        [1793491659648, False, 1793500000000, "HIGH", 0.9, "rules", None]).decode()
    deleted = "0001793491659649e2" + PICK + orjson.dumps(
        [1793491659649, True, None, None, None, None, None]).decode()
    payload = orjson.dumps({"FRAUD_FLAG": pick, "CLEARED": deleted}).decode()
    store = _write([("risk.v1", "u1", "v", "flags", payload)])
    flags = orjson.loads(_fields(store, risk)[layout.latest_field("flags")])
    assert flags == {"FRAUD_FLAG": {"ts": 1793491659648, "exp": 1793500000000, "values": {
        "severity": "HIGH", "score": 0.9, "source": "rules", "related_event_id": None}},
        "CLEARED": None}


def test_items_are_the_newest_n_with_each_field_from_its_best_ranked_event():
    parts = {}
    for i in range(25):  # more items than the feature keeps
        status = f"0002x{PICK}" + orjson.dumps(["SETTLED"]).decode()
        amount = f"0002x{PICK}" + orjson.dumps([float(i)]).decode()
        item = [1_000 + i, status, None, None, amount, None, None, None, None]
        parts[f"p{i:02d}"] = orjson.dumps(item).decode()  # FIELD_JSON prints values as text
    store = _write([("purchases.v1", "u1", "l", "recent_purchases", orjson.dumps(parts).decode())])
    items = orjson.loads(_fields(store, purchases)[layout.list_field("recent_purchases")])
    assert [i["item"] for i in items] == [f"p{i:02d}" for i in range(24, 4, -1)]
    assert items[0] == {"item": "p24", "ts": 1024, "status": "SETTLED", "merchant_id": None,
                        "category": None, "amount": 24.0, "currency": None,
                        "decline_reason": None, "reversal_reason": None, "country": None}


def test_a_clock_stamps_every_set_of_its_stream_and_prunes_once_a_day():
    day = 86_400_000
    writes = OnlineWrites([spending, declines])
    clock = {"": f"{40 * day + 5:020d}"}
    first = writes.key_writes([("transactions", "u1", "c", "", orjson.dumps(clock).decode())])
    assert {w.key for w in first} == {layout.entity_key(spending, "u1"),
                                      layout.entity_key(declines, "u1")}
    assert all(w.set_fields[layout.STAMP_FIELD] == str(40 * day + 5).encode() for w in first)
    spending_write = next(w for w in first if w.key == layout.entity_key(spending, "u1"))
    # 30 days of daily tiles are read: the first one kept is day 40 - 30 + 1
    assert (day, 11) in spending_write.prune_tiles
    again = writes.key_writes([("transactions", "u1", "c", "",
                                orjson.dumps({"": f"{40 * day + 9:020d}"}).decode())])
    assert all(not w.prune_tiles for w in again)  # same day: no second scan

    store = MemoryOnlineStore()
    key = layout.entity_key(spending, "u1")
    store.write([type(spending_write)(key, {layout.tile_field(day, 10): b"{}",
                                            layout.tile_field(day, 11): b"{}"})])
    store.write([spending_write])
    assert layout.tile_field(day, 10) not in store.hashes[key]
    assert layout.tile_field(day, 11) in store.hashes[key]

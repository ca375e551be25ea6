"""Iceberg tables of the lake: schema from the contract, idempotent upserts, reads."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mercury.contracts import registry, schemas
from mercury.contracts.avro_walk import named_types, resolve
from mercury.lake import tables
from tests.lake_fixtures import awkward_transactions, transaction, utc


def _rows_by_id(table: pa.Table, key: str = "event_id") -> dict[str, dict]:
    return {row[key]: row for row in table.to_pylist()}


def _nullable_in_contract(field: dict, names: dict) -> bool:
    node = resolve(field["type"], names)
    return isinstance(node, list) and "null" in [resolve(b, names) for b in node]


@pytest.mark.parametrize("subject", schemas.subjects())
def test_arrow_schema_has_every_contract_field_with_its_nullability(subject):
    contract = schemas.load(subject).schema
    names = named_types(contract)
    arrow = tables.arrow_schema(subject)
    assert arrow.names == [f["name"] for f in contract["fields"]]
    for field in contract["fields"]:
        assert arrow.field(field["name"]).nullable == _nullable_in_contract(field, names)


def test_arrow_schema_maps_transaction_types():
    arrow = tables.arrow_schema("transaction")
    assert arrow.field("event_ts").type == pa.timestamp("ms", tz="UTC")
    assert arrow.field("ingest_ts").type == pa.timestamp("ms", tz="UTC")
    assert arrow.field("amount").type == pa.float64()
    assert arrow.field("event_type").type == pa.string()  # enum
    assert arrow.field("decline_reason").type == pa.string()  # nullable enum
    assert arrow.field("decline_reason").nullable
    assert not arrow.field("event_id").nullable
    assert arrow.field("card_last4").metadata[b"data_class"] == b"card_data"
    assert arrow.metadata[b"avro_version"] == str(schemas.versions("transaction")[-1]).encode()


def test_arrow_schema_maps_nested_types():
    audit = tables.arrow_schema("inference_audit")
    assert audit.field("retrieved_chunk_ids").type == pa.list_(
        pa.field("element", pa.string(), nullable=False))
    assert pa.types.is_map(audit.field("stage_latency_ms").type)
    assert audit.field("stage_latency_ms").type.item_type == pa.float64()
    cdc = tables.arrow_schema("user_profile_cdc")
    after = cdc.field("after").type
    assert pa.types.is_struct(after) and cdc.field("after").nullable
    assert after.field("notification_prefs").type.item_type == pa.bool_()
    # ``after`` reuses the named record declared in ``before``
    assert cdc.field("before").type == after


@pytest.mark.parametrize("avro_type", [
    ["null", "string", "long"],  # a union with two non-null branches
    {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
    {"type": "int", "logicalType": "time-millis"},
    "NoSuchType",
])
def test_unmapped_avro_types_raise_naming_the_field(avro_type):
    schema = {"type": "record", "name": "R",
              "fields": [{"name": "ok", "type": "string"}, {"name": "odd", "type": avro_type}]}
    with pytest.raises(tables.UnmappedAvroType, match=r"R\.odd"):
        tables.avro_to_arrow(schema)


def test_ensure_table_creates_every_stream_table_partitioned_by_event_day(tmp_settings):
    for stream in registry.STREAMS:
        if not stream.lake_table:
            continue
        table = tables.ensure_table(tmp_settings, stream.name)
        assert [f.name for f in table.schema().fields] == tables.arrow_schema(
            stream.schema_subject).names
        fields = table.spec().fields
        if stream.event_time_field:
            assert [(f.name, str(f.transform)) for f in fields] == [
                (f"{stream.event_time_field}_day", "day")]
            source = table.schema().find_field(fields[0].source_id)
            assert source.name == stream.event_time_field
        else:
            assert fields == ()
    assert tables.catalog(tmp_settings).load_table("raw.transactions").properties[
        "mercury.event_id_field"] == "event_id"


def test_upsert_is_idempotent_collapses_duplicates_and_drops_unknown_keys(tmp_settings):
    records = awkward_transactions()
    unique_ids = {r["event_id"] for r in records}
    first = tables.upsert(tmp_settings, "transactions", records)
    assert first == tables.UpsertResult(inserted=len(unique_ids), updated_or_unchanged=0,
                                        replaced=0, collapsed=len(records) - len(unique_ids))
    snapshot = tables.catalog(tmp_settings).load_table("raw.transactions").current_snapshot()

    again = tables.upsert(tmp_settings, "transactions", records)
    assert again.inserted == 0 and again.replaced == 0
    assert again.updated_or_unchanged == len(unique_ids)
    table = tables.catalog(tmp_settings).load_table("raw.transactions")
    assert table.current_snapshot().snapshot_id == snapshot.snapshot_id  # nothing committed

    stored = tables.read(tmp_settings, "transactions")
    assert stored.num_rows == len(unique_ids)
    assert stored.column_names == tables.arrow_schema("transaction").names
    assert "loyalty_tier" not in stored.column_names and "device" not in stored.column_names


def test_read_back_values_and_timestamps(tmp_settings):
    records = awkward_transactions()
    tables.upsert(tmp_settings, "transactions", records)
    stored = _rows_by_id(tables.read(tmp_settings, "transactions"))
    retried_id = records[-1]["event_id"]
    assert stored[retried_id]["amount"] == 1500.0  # the first arrival, not the retry's 9999
    assert stored[retried_id]["currency"] == "JPY"
    for record in records[:-1]:  # every original row comes back as written
        row = stored[record["event_id"]]
        for name in tables.arrow_schema("transaction").names:
            expected = record.get(name)
            if name in ("event_ts", "ingest_ts"):
                expected = utc(expected)
            assert row[name] == expected, (record["event_id"], name)
    midnight = stored[records[3]["event_id"]]["event_ts"]
    assert (midnight.year, midnight.month, midnight.day) == (2024, 3, 1)
    assert midnight.hour == 23 and midnight.microsecond == 999_000
    assert stored[records[6]["event_id"]]["installment_plan_id"] is None  # v1-shaped record


def test_an_earlier_arrived_copy_replaces_a_later_one_across_calls(tmp_settings):
    late = transaction(1, amount=10.0, ingest_ts=transaction(1)["ingest_ts"] + 60_000)
    early = transaction(1, amount=20.0)
    later_still = transaction(1, amount=30.0, ingest_ts=late["ingest_ts"] + 1)
    tables.upsert(tmp_settings, "transactions", [late, transaction(2)])

    result = tables.upsert(tmp_settings, "transactions", [early])
    assert (result.inserted, result.updated_or_unchanged, result.replaced) == (0, 1, 1)
    result = tables.upsert(tmp_settings, "transactions", [later_still])
    assert (result.inserted, result.updated_or_unchanged, result.replaced) == (0, 1, 0)

    stored = _rows_by_id(tables.read(tmp_settings, "transactions"))
    assert len(stored) == 2
    assert stored[early["event_id"]]["amount"] == 20.0
    assert stored[early["event_id"]]["ingest_ts"] == utc(early["ingest_ts"])


def test_ties_keep_the_first_seen_copy(tmp_settings):
    first, second = transaction(1, amount=1.0), transaction(1, amount=2.0)
    result = tables.upsert(tmp_settings, "transactions", [first, second])
    assert (result.inserted, result.collapsed) == (1, 1)
    tables.upsert(tmp_settings, "transactions", [second])
    assert tables.read(tmp_settings, "transactions")["amount"].to_pylist() == [1.0]


def test_a_table_made_from_an_older_contract_gains_the_new_columns(tmp_settings):
    cat = tables.catalog(tmp_settings)
    cat.create_namespace_if_not_exists("raw")
    old = cat.create_table("raw.transactions", schema=tables.arrow_schema("transaction", 1))
    assert "installment_plan_id" not in old.schema().column_names

    tables.upsert(tmp_settings, "transactions", [transaction(1, installment_plan_id="bnpl_9")])
    stored = tables.read(tmp_settings, "transactions")
    assert stored["installment_plan_id"].to_pylist() == ["bnpl_9"]


def test_missing_required_value_is_refused(tmp_settings):
    bad = transaction(1)
    bad["merchant_id"] = None
    with pytest.raises(tables.LakeWriteError, match="merchant_id"):
        tables.upsert(tmp_settings, "transactions", [bad])


def test_streams_without_event_id_cannot_be_upserted(tmp_settings):
    with pytest.raises(ValueError, match="no event id"):
        tables.upsert(tmp_settings, "user_profile_cdc", [])


def test_nested_types_round_trip(tmp_settings):
    record = {
        "request_id": "req-1", "event_ts": 1_709_294_400_000, "caller": "assistant",
        "user_token": "tok_1", "question": "Can I afford it?", "intent": "affordability",
        "retrieved_chunk_ids": ["doc1#0", "doc2#3"], "feature_set": "user_context",
        "feature_set_version": 3, "features_as_of": 1_709_294_399_000, "index_version": None,
        "embedding_model": None, "llm_model_version": "m-2024-03",
        "stage_latency_ms": {"features": 4.5, "retrieval": 18.0}, "total_latency_ms": 31.2,
        "degraded_parts": [],
    }
    result = tables.upsert(tmp_settings, "inference_audit", [record, dict(record)])
    assert (result.inserted, result.collapsed) == (1, 1)
    (row,) = tables.read(tmp_settings, "inference_audit").to_pylist()
    assert row["retrieved_chunk_ids"] == ["doc1#0", "doc2#3"]
    assert dict(row["stage_latency_ms"]) == {"features": 4.5, "retrieval": 18.0}
    assert row["features_as_of"] == utc(1_709_294_399_000)
    assert row["degraded_parts"] == []


def test_two_hundred_thousand_records_in_seconds(tmp_settings):
    records = [transaction(i) for i in range(200_000)]
    started = time.perf_counter()
    first = tables.upsert(tmp_settings, "transactions", records)
    second = tables.upsert(tmp_settings, "transactions", records)
    elapsed = time.perf_counter() - started
    assert first.inserted == 200_000 and second.updated_or_unchanged == 200_000
    stored = tables.read(tmp_settings, "transactions")
    assert stored.num_rows == 200_000
    assert pc.count_distinct(stored["event_id"]).as_py() == 200_000
    assert elapsed < 30, f"two upserts of 200K records took {elapsed:.1f} s"

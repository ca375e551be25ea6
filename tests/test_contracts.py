"""Contracts: validation rules, data classes, compatibility, wire format, registry."""

import copy
import io

import fastavro
import orjson
import pytest

from mercury.contracts import compatibility, registry, schemas, wire
from mercury.contracts.check import check_everything
from mercury.contracts.data_classes import DataClass, field_classes, missing_data_classes
from mercury.contracts.validation import validator

GOOD_TX = {
    "event_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "user_id": "usr_1", "account_id": "acc_1",
    "merchant_id": "mch_1", "amount": 42.5, "currency": "EUR", "event_type": "AUTH",
    "event_ts": 1_793_491_200_000, "ingest_ts": 1_793_491_200_450, "risk_score": 0.12,
    "mcc_code": "5411", "country": "DE", "purchase_id": "pur_1", "auth_decision": "DECLINED",
    "decline_reason": "INSUFFICIENT_FUNDS", "card_last4": "4242",
}


def test_repository_contracts_pass_every_check():
    assert check_everything() == []


def test_good_transaction_passes_and_gets_defaults():
    verdict = validator("transaction").validate(dict(GOOD_TX))
    assert verdict.ok, verdict.message
    assert verdict.record["installment_plan_id"] is None  # v2 field, default filled
    assert verdict.record["reversal_reason"] is None


@pytest.mark.parametrize("subject", ["transaction", "user_activity", "risk_signal"])
def test_an_event_time_far_after_its_arrival_is_refused_by_its_own_rule(subject):
    """A producer whose clock is fast: up to an hour ahead of arrival still counts, beyond it
    the record is refused (every executor validates with this, so all refuse it)."""
    from mercury.contracts.validation import EVENT_AHEAD_OF_ARRIVAL_MS

    check = validator(subject)
    fields = {f["name"] for f in check.schema["fields"]}
    assert {"event_ts", "ingest_ts"} <= fields
    if subject != "transaction":
        return  # the rule applies to the subject by its fields; one full record suffices
    hour_fast = {**GOOD_TX, "event_ts": GOOD_TX["ingest_ts"] + EVENT_AHEAD_OF_ARRIVAL_MS}
    assert check.validate(hour_fast).ok
    days_fast = {**GOOD_TX, "event_ts": GOOD_TX["ingest_ts"] + 45 * 86_400_000}
    verdict = check.validate(days_fast)
    assert (verdict.ok, verdict.rule, verdict.field) == (False, "event_after_arrival",
                                                         "event_ts")
    assert "1080.0 h after ingest_ts" in verdict.message


def test_unknown_fields_pass_through_and_are_reported():
    record = dict(GOOD_TX, wallet_type="APPLE_PAY", installment_plan_id="plan_9")
    verdict = validator("transaction").validate(record)
    assert verdict.ok
    assert verdict.unknown_fields == ("wallet_type",)
    assert verdict.record["wallet_type"] == "APPLE_PAY"
    assert verdict.record["installment_plan_id"] == "plan_9"


@pytest.mark.parametrize("change, rule, field", [
    ({"amount": "42.50"}, "wrong_type", "amount"),
    ({"event_ts": "2026-11-01T00:00:00Z"}, "wrong_type", "event_ts"),
    ({"risk_score": True}, "wrong_type", "risk_score"),
    ({"merchant_id": None}, "wrong_type", "merchant_id"),
    ({"event_type": "REFUND"}, "unknown_enum", "event_type"),
    ({"decline_reason": "BAD_LUCK"}, "unknown_enum", "decline_reason"),
    ({"currency": "EURO"}, "bad_currency", "currency"),
    ({"currency": "eur"}, "bad_currency", "currency"),
    ({"country": "XX"}, "bad_country", "country"),
    ({"mcc_code": "54a1"}, "bad_mcc_code", "mcc_code"),
    ({"event_id": "not-a-uuid"}, "bad_uuid", "event_id"),
    ({"event_ts": 2**64}, "wrong_type", "event_ts"),
])
def test_each_broken_field_names_its_rule_and_field(change, rule, field):
    verdict = validator("transaction").validate(dict(GOOD_TX, **change))
    assert not verdict.ok
    assert (verdict.rule, verdict.field) == (rule, field)
    assert field in verdict.message


@pytest.mark.parametrize("missing", ["event_id", "merchant_id", "amount", "event_ts"])
def test_missing_required_field(missing):
    record = {k: v for k, v in GOOD_TX.items() if k != missing}
    verdict = validator("transaction").validate(record)
    assert (verdict.rule, verdict.field) == ("missing_required_field", missing)


def test_optional_field_may_be_missing():
    record = {k: v for k, v in GOOD_TX.items() if k not in ("purchase_id", "card_last4")}
    assert validator("transaction").validate(record).ok


@pytest.mark.parametrize("raw, rule", [
    (b'{"event_id": "1b4e28ba', "not_json"),
    (b"", "not_json"),
    (b"[1, 2]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
])
def test_payloads_that_are_not_records(raw, rule):
    assert validator("transaction").validate_bytes(raw).rule == rule


def test_nested_cdc_record_is_validated_inside_the_envelope():
    after = {"user_id": "usr_1", "full_name": "Ana Smith", "email": "a@example.com",
             "locale": "en-US", "home_country": "US", "risk_tier": "LOW",
             "kyc_status": "VERIFIED", "notification_prefs": {"email": True},
             "updated_at": 1_793_491_200_000}
    change = {"before": None, "after": after, "op": "c", "ts_ms": 1_793_491_200_100,
              "source": {"connector": "postgresql", "db": "mercury", "schema": "mercury",
                         "table": "user_profiles", "lsn": 123, "ts_ms": 1_793_491_200_000}}
    check = validator("user_profile_cdc")
    assert check.validate(change).ok
    bad = copy.deepcopy(change)
    bad["after"]["kyc_status"] = "MAYBE"
    verdict = check.validate(bad)
    assert (verdict.rule, verdict.field) == ("unknown_enum", "after.kyc_status")
    bad = copy.deepcopy(change)
    bad["after"]["notification_prefs"] = {"email": "yes"}
    assert validator("user_profile_cdc").validate(bad).field == "after.notification_prefs.email"


def test_every_field_has_a_data_class_and_sensitive_ones_are_marked():
    for subject in schemas.subjects():
        assert missing_data_classes(schemas.load(subject).schema) == []
    tx = field_classes(schemas.load("transaction").schema)
    assert tx["card_last4"] is DataClass.CARD_DATA
    assert tx["user_id"] is DataClass.PSEUDONYMOUS_ID
    cdc = field_classes(schemas.load("user_profile_cdc").schema)
    assert cdc["after.email"] is DataClass.PERSONAL
    assert cdc["before.full_name"] is DataClass.PERSONAL


def test_a_field_without_data_class_is_reported():
    schema = copy.deepcopy(schemas.load("risk_signal").schema)
    del schema["fields"][2]["data_class"]
    assert missing_data_classes(schema) == ["account_id (data_class=None)"]


# ---- compatibility ------------------------------------------------------------------------

V1 = schemas.load("transaction", 1).schema


def _with_fields(fields):
    schema = copy.deepcopy(V1)
    schema["fields"] = fields
    return schema


def test_adding_an_optional_field_with_default_passes():
    new = _with_fields(V1["fields"] + [{"name": "note", "type": ["null", "string"],
                                        "default": None, "data_class": "public"}])
    assert compatibility.problems(V1, new) == []


def test_removing_a_field_fails_naming_it():
    new = _with_fields([f for f in V1["fields"] if f["name"] != "mcc_code"])
    assert compatibility.problems(V1, new) == ["field 'mcc_code' was removed"]


def test_retyping_a_field_fails_naming_it():
    new = copy.deepcopy(V1)
    next(f for f in new["fields"] if f["name"] == "amount")["type"] = "string"
    assert compatibility.problems(V1, new) == [
        "field 'amount' changed type from double to string"]


def test_adding_a_required_field_fails_naming_it():
    new = _with_fields(V1["fields"] + [{"name": "channel", "type": "string",
                                        "data_class": "public"}])
    assert compatibility.problems(V1, new) == ["field 'channel' was added without a default"]


def test_widening_a_number_passes_but_dropping_an_enum_symbol_fails():
    old = _with_fields(V1["fields"] + [{"name": "n", "type": "int", "default": 0,
                                        "data_class": "public"}])
    widened = _with_fields(V1["fields"] + [{"name": "n", "type": "long", "default": 0,
                                            "data_class": "public"}])
    assert compatibility.problems(old, widened) == []
    narrower = copy.deepcopy(V1)
    narrower["fields"][6]["type"]["symbols"] = ["AUTH", "SETTLEMENT"]
    assert compatibility.problems(V1, narrower) == [
        "field 'event_type' enum TransactionEventType dropped symbol(s) REVERSAL "
        "with no enum default"]


def test_the_checker_agrees_with_avro_resolution_in_fastavro():
    """Data written with v1 reads with v2 (our checker says compatible), and fastavro refuses
    a retyped field that our checker refuses."""
    v2 = schemas.load("transaction", 2).schema
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(copy.deepcopy(V1)),
                               {**GOOD_TX, "reversal_reason": None})
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, fastavro.parse_schema(copy.deepcopy(V1)),
                                      fastavro.parse_schema(copy.deepcopy(v2)))
    assert read["installment_plan_id"] is None and compatibility.problems(V1, v2) == []
    retyped = copy.deepcopy(v2)
    next(f for f in retyped["fields"] if f["name"] == "amount")["type"] = "string"
    buffer.seek(0)
    with pytest.raises(Exception):  # noqa: B017 - fastavro raises its own resolution errors
        fastavro.schemaless_reader(buffer, fastavro.parse_schema(copy.deepcopy(V1)),
                                   fastavro.parse_schema(retyped))
    assert compatibility.problems(V1, retyped)


# ---- wire format and registry --------------------------------------------------------------

def test_confluent_wire_format_round_trip_and_schema_evolution():
    v1 = schemas.load("transaction", 1)
    record = {**GOOD_TX, "reversal_reason": None}
    payload = wire.encode(record, v1)
    assert payload[0] == 0
    assert int.from_bytes(payload[1:5], "big") == v1.schema_id
    decoded, schema_id = wire.decode(payload, reader=schemas.load("transaction"))
    assert schema_id == v1.schema_id
    assert decoded == {**record, "installment_plan_id": None}
    assert orjson.dumps(decoded)  # timestamps stay epoch milliseconds, as on the event log


def test_wire_format_rejects_foreign_payloads():
    with pytest.raises(wire.WireFormatError, match="magic byte"):
        wire.decode(b"\x01\x00\x00\x00\x01abc")
    with pytest.raises(wire.WireFormatError, match="shorter"):
        wire.decode(b"\x00\x01")
    with pytest.raises(schemas.UnknownSchema):
        wire.decode(b"\x00\x00\x00\x00\x01abc")


def test_schema_ids_are_distinct_and_stable():
    ids = [schemas.load(s, v).schema_id for s in schemas.subjects() for v in schemas.versions(s)]
    assert len(ids) == len(set(ids))
    assert schemas.load("transaction", 1).schema_id == 1660738990  # changes only with the schema


def test_registry_names_every_stream_with_a_dead_letter_stream_and_table():
    assert registry.check() == []
    tx = registry.stream("transactions")
    assert (tx.key, tx.schema_subject, tx.dead_letter_stream, tx.lake_table) == (
        "user_id", "transaction", "transactions.dlq", "raw.transactions")
    assert registry.stream("transactions.dlq").schema_subject == "dead_letter"
    with pytest.raises(KeyError, match="no stream"):
        registry.stream("payments")

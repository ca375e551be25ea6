"""Data classes at the ingest boundary: the unknown-field classifier, what the validator does
with its answers, and dead letters that never quote a value (docs/COMPLIANCE.md, "Data classes
at the sinks"). Each test names the wrong implementation it catches."""

from __future__ import annotations

import copy
import time

import orjson
import pytest

from mercury.contracts.sensitive import (
    SCAN_CHARS,
    SCAN_NODES,
    TOO_LARGE,
    classify,
    has_card_number,
    iban_checks,
)
from mercury.contracts.validation import CARD_DATA_MASK, validator
from mercury.quality.dead_letters import make_dead_letter
from tests.test_contracts import GOOD_TX

PAN = "4111111111111111"            # Luhn-valid (a network test number)
PAN_BAD_LUHN = "4111111111111112"   # one digit off: not a card number
EMAIL = "jane.doe@example.com"
NAME = "Jane Doe"
IBAN = "DE89370400440532013000"     # mod-97 holds
IBAN_BAD = "DE88370400440532013000"  # check digits off by one


@pytest.mark.parametrize("name", ["pan", "PAN", "cardNumber", "card_number", "CARD-NUMBER",
                                  "cvv", "cvv2", "CVC", "card_expiry", "expMonth", "email",
                                  "contactEmail", "iban", "ssn", "phone_number", "first_name",
                                  "lastName", "cardholder_name", "nickname", "date_of_birth"])
def test_names_that_say_card_or_personal_data_are_sensitive(name):
    """Catches a case-sensitive or separator-sensitive name scan."""
    assert classify(name, "x") is not None


@pytest.mark.parametrize("name", ["wallet_type", "installment_plan_id", "experiment_bucket",
                                  "model_version", "loyalty_tier", "company", "span",
                                  "japan_region", "card_not_present", "device", "expected",
                                  "timeline", "account_id"])
def test_ordinary_names_are_not(name):
    """Catches a substring scan (``pan`` in ``company``, ``tel`` in ``timeline``)."""
    assert classify(name, "APPLE_PAY") is None


@pytest.mark.parametrize("value, rule", [
    (PAN, "value_card_number"),
    ("4111 1111 1111 1111", "value_card_number"),
    ("4111-1111-1111-1111", "value_card_number"),
    (f"paid with {PAN}, thanks", "value_card_number"),
    (int(PAN), "value_card_number"),
    ("378282246310005", "value_card_number"),          # Amex, 15 digits
    (PAN_BAD_LUHN, None),                              # Luhn fails
    ("1793491659648", None),                           # epoch ms: 13 digits, not a card
    ("41111111111111111111", None),                    # 20 digits: too long for a card
    ("4111  1111 1111 1111", None),                    # two separators break the run
    (EMAIL, "value_email"),
    (f"mail me: {EMAIL}", "value_email"),
    ("user@localhost", None),
    (IBAN, "value_iban"),
    ("GB82 WEST 1234 5698 7654 32", "value_iban"),
    (IBAN_BAD, None),
    ({"nested": [{"deep": PAN}]}, "value_card_number"),
    ({EMAIL: True}, "value_email"),                     # a key is text too
    ("fraud-v7.2", None), (12.5, None), (True, None), (None, None),
])
def test_values_are_scanned_with_their_checks(value, rule):
    """Catches a digit-count scan without Luhn, an IBAN shape without mod 97, and a scan that
    stops at the top level."""
    assert classify("note", value) == rule


def test_a_security_code_needs_its_name():
    assert classify("cvv", "123") == "value_security_code"
    assert classify("cvc2", 4567) == "value_security_code"
    assert classify("quantity", "123") is None


def test_what_is_too_large_to_scan_fails_closed():
    """Catches a bounded scan that lets padding hide a card number past the bound."""
    padded = "x" * SCAN_CHARS + PAN
    assert classify("note", padded) == TOO_LARGE
    assert classify("note", list(range(SCAN_NODES + 1))) == TOO_LARGE
    assert classify("note", {"a": [[["ok"] * 10] * 10] * 10}) == TOO_LARGE
    assert classify("n" * (SCAN_CHARS + 1), "ok") == TOO_LARGE
    assert classify("note", "x" * SCAN_CHARS) is None


@pytest.mark.parametrize("hostile", [
    "1" * 100_000, "4" + " 1" * 50_000, "a" * 100_000, "a@" * 50_000, "a." * 50_000 + "@",
    "DE12" + " A" * 50_000, "A" * 100_000, "-" * 100_000, ("aA" * 50_000),
])
def test_hostile_strings_are_scanned_in_linear_time(hostile):
    """Catches a backtracking pattern: each of these takes seconds on a quadratic regex."""
    started = time.perf_counter()
    for text in (hostile, hostile[:SCAN_CHARS]):
        classify("note", text)
        classify(text, None)
    has_card_number(hostile)
    assert time.perf_counter() - started < 0.5


def test_luhn_and_mod97_by_hand():
    assert has_card_number("79927398713") is False  # Luhn-valid but 11 digits
    assert has_card_number("5555555555554444") and not has_card_number("5555555555554445")
    assert iban_checks("GB82WEST12345698765432") and not iban_checks("GB82WEST12345698765433")


@pytest.mark.parametrize("text", [f"ref 1 {PAN}", f"{PAN} 2027", "1 4111 1111 1111 1111 12",
                                  f"1-{PAN}-9", f"7 7 {PAN[:8]} {PAN[8:]} 7"])
def test_digit_groups_around_a_card_number_do_not_hide_it(text):
    """Catches checking only a whole run (a group before or after joins the run)."""
    assert has_card_number(text)


def _luhn_naive(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _has_card_number_naive(text: str) -> bool:
    """Every window of whole groups of every run, Luhn computed from scratch."""
    import re

    for run in re.findall(r"[0-9]+(?:[ -][0-9]+)*", text):
        groups = re.split(r"[ -]", run)
        for i in range(len(groups)):
            for j in range(i + 1, len(groups) + 1):
                number = "".join(groups[i:j])
                shaped = number[0] == "4" if len(number) == 13 else \
                    14 <= len(number) <= 19 and "2" <= number[0] <= "6"
                if shaped and _luhn_naive(number):
                    return True
    return False


def test_the_linear_card_scan_equals_the_naive_one_on_random_text():
    """Catches an off-by-one in the prefix-sum Luhn (the parity of the window's end)."""
    import random

    rng = random.Random(7)
    found = 0
    for _ in range(3000):
        text = "".join(rng.choice("0123456789012345678945  -x") for _ in range(rng.randint(0, 60)))
        expected = _has_card_number_naive(text)
        assert has_card_number(text) == expected, text
        found += expected
    assert found > 50  # the random texts hold card-shaped runs often enough to mean something


# ---- the rule: drop sensitive unknown fields, keep clean ones, mask card data ---------------


def test_sensitive_unknown_fields_are_dropped_and_reported_without_their_value():
    """Catches reporting-only (the pan would reach every sink) and dropping every unknown
    field (schema evolution would stop)."""
    record = dict(GOOD_TX, pan=PAN, note=f"card {PAN}", contact=EMAIL, cardholder=NAME,
                  wallet_type="APPLE_PAY")
    verdict = validator("transaction").validate(record)
    assert verdict.ok
    assert verdict.unknown_fields == ("wallet_type",)
    assert verdict.record["wallet_type"] == "APPLE_PAY"
    assert dict(verdict.dropped_fields) == {"pan": "name_card_number",
                                            "note": "value_card_number",
                                            "contact": "value_email",
                                            "cardholder": "name_person"}
    kept = orjson.dumps(verdict.record).decode()
    for value in (PAN, EMAIL, NAME):
        assert value not in kept
    assert value not in repr(verdict.dropped_fields)


def test_a_key_that_holds_data_is_reported_by_position():
    record = dict(GOOD_TX, **{EMAIL: "yes"})
    verdict = validator("transaction").validate(record)
    assert verdict.ok and EMAIL not in verdict.record
    assert verdict.dropped_fields == ((f"[key {len(GOOD_TX)}]", "value_email"),)


def test_nested_unknown_fields_are_classified_too():
    change = {"before": None, "op": "c", "ts_ms": 1_793_491_200_000,
              "after": {"user_id": "usr_1", "full_name": NAME, "email": EMAIL,
                        "locale": "en-GB", "home_country": "GB", "risk_tier": "LOW",
                        "kyc_status": "VERIFIED", "notification_prefs": {"email": True},
                        "updated_at": 1_793_491_200_000, "iban": IBAN, "shard": 3},
              "source": {"connector": "pgoutput", "db": "d", "schema": "s", "table": "t",
                         "lsn": 1, "tx_id": 2, "ts_ms": 1_793_491_200_000}}
    verdict = validator("user_profile_cdc").validate(change)
    assert verdict.ok
    assert verdict.dropped_fields == (("after.iban", "name_bank_account"),)
    assert verdict.unknown_fields == ("after.shard",)
    assert "iban" not in verdict.record["after"]


def test_card_data_leaves_masked_and_absent_stays_absent():
    """Catches card_last4 in clear in the lake and a mask that invents presence."""
    check = validator("transaction")
    assert check.validate(dict(GOOD_TX)).record["card_last4"] == CARD_DATA_MASK
    assert check.validate(dict(GOOD_TX, card_last4=None)).record["card_last4"] is None


def test_a_dropped_field_changes_no_feature_value():
    from mercury.durations import HOUR_MS
    from mercury.features.executors.reference import reference_values
    from tests.test_reference import ALL_SETS, T0, auth, settle

    plain = [settle(1, 10.0, T0 + HOUR_MS), auth(2, 5.0, T0 + 2 * HOUR_MS)]
    leaky = [settle(1, 10.0, T0 + HOUR_MS, pan=PAN, note=EMAIL),
             auth(2, 5.0, T0 + 2 * HOUR_MS, cvv="123", wallet_type="NONE")]
    as_of = T0 + 3 * HOUR_MS
    assert reference_values(ALL_SETS, leaky, as_of) == reference_values(ALL_SETS, plain, as_of)


# ---- dead letters name the field and the rule, never the value ------------------------------

_HOSTILE = (PAN, EMAIL, NAME)


def _transaction_breaks(value: str) -> list[bytes]:
    """Every transaction rule broken with ``value`` where the payload allows it."""
    records = [dict(GOOD_TX, amount=value), dict(GOOD_TX, event_type=value),
               dict(GOOD_TX, currency=value), dict(GOOD_TX, country=value),
               dict(GOOD_TX, mcc_code=value), dict(GOOD_TX, event_id=value),
               dict(GOOD_TX, decline_reason=value), dict(GOOD_TX, card_last4=int(PAN)),
               dict(GOOD_TX, user_id=[value]), dict(GOOD_TX, risk_score={value: value})]
    missing = {k: v for k, v in GOOD_TX.items() if k != "merchant_id"}
    late = dict(GOOD_TX, event_ts=GOOD_TX["ingest_ts"] + 10**9, note=value)
    payloads = [orjson.dumps(r) for r in [*records, dict(missing, note=value), late]]
    good = orjson.dumps(dict(GOOD_TX, note=value))
    return [*payloads, good[:-5], b"[" + good + b"]", orjson.dumps(value)]


def _profile_breaks(value: str) -> list[bytes]:
    row = {"user_id": "usr_1", "full_name": NAME, "email": EMAIL, "locale": "en-GB",
           "home_country": "GB", "risk_tier": "LOW", "kyc_status": "VERIFIED",
           "notification_prefs": {"email": True}, "updated_at": 1_793_491_200_000}
    change = {"before": None, "after": row, "op": "c", "ts_ms": 1_793_491_200_000,
              "source": {"connector": "pgoutput", "db": "d", "schema": "s", "table": "t",
                         "lsn": 1, "tx_id": 2, "ts_ms": 1_793_491_200_000}}
    broken = []
    for field, bad in (("full_name", 42), ("email", 4_111_111_111_111_111),
                       ("risk_tier", value), ("home_country", value),
                       ("notification_prefs", {value: "yes"}), ("updated_at", value)):
        damaged = copy.deepcopy(change)
        damaged["after"][field] = bad
        broken.append(orjson.dumps(damaged))
    missing = copy.deepcopy(change)
    del missing["after"]["kyc_status"]
    return [*broken, orjson.dumps(missing)]


@pytest.mark.parametrize("stream, breaks", [("transactions", _transaction_breaks),
                                            ("user_profile_cdc", _profile_breaks)])
@pytest.mark.parametrize("hostile", _HOSTILE)
def test_no_dead_letter_field_but_the_raw_payload_quotes_a_value(stream, breaks, hostile):
    """Catches ``expected a string, got int 4242`` and ids lifted from a hostile payload."""
    from mercury.contracts import registry

    check = validator(registry.stream(stream).schema_subject)
    rules = set()
    for n, raw in enumerate(breaks(hostile)):
        verdict = check.validate_bytes(raw)
        assert not verdict.ok, raw
        rules.add(verdict.rule)
        letter = make_dead_letter(stream, f"{stream}/part-0.jsonl:{n}", raw, verdict, 0)
        public = orjson.dumps({k: v for k, v in letter.items() if k != "raw_payload"}).decode()
        for value in (hostile, PAN, EMAIL, NAME, "4111", "Jane", "4242"):
            assert value not in public, (verdict.rule, public)
    assert len(rules) >= (4 if stream == "user_profile_cdc" else 10)


def test_the_raw_payload_is_not_classed_public():
    from mercury.contracts import schemas
    from mercury.contracts.data_classes import DataClass, field_classes

    for version in schemas.versions("dead_letter"):
        classes = field_classes(schemas.load("dead_letter", version).schema)
        assert classes["raw_payload"] is not DataClass.PUBLIC


def test_our_own_producer_is_refused_a_sensitive_field_not_cleaned_quietly():
    """The serving process writes audit records itself: an undeclared sensitive field there
    is a bug, refused before it is spooled (and named by path and rule only)."""
    from mercury.serving.audit import RecordRejected
    from mercury.serving.runtime import contract_check

    contract_check("transactions", dict(GOOD_TX, wallet_type="NONE"))
    with pytest.raises(RecordRejected, match=r"pan \(name_card_number\)") as refused:
        contract_check("transactions", dict(GOOD_TX, pan=PAN))
    assert PAN not in str(refused.value)

"""The transaction quality gate: a Great Expectations suite derived from the contract."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mercury.contracts import schemas
from mercury.quality import expectations
from tests.lake_fixtures import awkward_transactions, transaction


def _good_batch() -> pd.DataFrame:
    """Deduplicated awkward rows (extra columns, nulls in optional fields) plus plain ones."""
    rows = awkward_transactions()[:-1] + [transaction(n) for n in range(10, 40)]
    return pd.DataFrame(rows)


def test_suite_is_derived_from_the_contract():
    specs = expectations.suite_spec("transaction")
    names = {s.name for s in specs}
    for field in schemas.load("transaction").schema["fields"]:
        assert f"expect_column_to_exist({field['name']})" in names
    assert "expect_column_values_to_be_unique(event_id)" in names
    assert "expect_column_values_to_not_be_null(event_ts)" in names
    assert "expect_column_values_to_not_be_null(purchase_id)" not in names  # optional
    by_name = {s.name: s.kwargs for s in specs if s.type != "expect_column_to_exist"}
    assert by_name["expect_column_values_to_be_in_set(event_type)"]["value_set"] == [
        "AUTH", "SETTLEMENT", "REVERSAL"]
    assert "EUR" in by_name["expect_column_values_to_be_in_set(currency)"]["value_set"]
    assert by_name["expect_column_values_to_match_regex(mcc_code)"]["regex"] == "^[0-9]{4}$"
    assert by_name["expect_column_values_to_be_between(risk_score)"] == {
        "column": "risk_score", "min_value": 0.0, "max_value": 1.0}
    assert by_name["expect_column_values_to_be_between(event_ts)"]["min_value"] == (
        expectations.EARLIEST_EVENT_MS)


def test_committed_suite_files_are_current(tmp_path):
    written = expectations.write_suite_files(tmp_path)
    for path in written:
        committed = expectations.SUITES_DIR / path.name
        assert committed.is_file(), f"{committed} is missing: run write_suite_files()"
        assert json.loads(committed.read_text()) == json.loads(path.read_text()), (
            f"{committed} is stale: regenerate it with write_suite_files()")


def test_checkpoint_passes_a_good_batch():
    outcome = expectations.run_transaction_checkpoint(_good_batch())
    assert outcome.success, outcome.details
    assert outcome.failed_expectations == []
    assert outcome.statistics["evaluated_expectations"] == len(
        expectations.suite_spec("transaction"))
    assert outcome.statistics["unsuccessful_expectations"] == 0


def test_checkpoint_accepts_a_batch_read_from_the_lake():
    from mercury.lake.tables import records_to_arrow

    frame = records_to_arrow("transaction", awkward_transactions()[:-1]).to_pandas()
    assert pd.api.types.is_datetime64_any_dtype(frame["event_ts"])
    assert expectations.run_transaction_checkpoint(frame).success


@pytest.mark.parametrize(("breakage", "failed"), [
    (lambda df: df.assign(event_id=[df["event_id"][0]] + list(df["event_id"][1:-1])
                          + [df["event_id"][0]]),
     "expect_column_values_to_be_unique(event_id)"),
    (lambda df: df.assign(currency=["XYZ"] + list(df["currency"][1:])),
     "expect_column_values_to_be_in_set(currency)"),
    (lambda df: df.assign(risk_score=[3.0] + list(df["risk_score"][1:])),
     "expect_column_values_to_be_between(risk_score)"),
    (lambda df: df.assign(amount=[-0.01] + list(df["amount"][1:])),
     "expect_column_values_to_be_between(amount)"),
    (lambda df: df.assign(mcc_code=["54111"] + list(df["mcc_code"][1:])),
     "expect_column_values_to_match_regex(mcc_code)"),
    (lambda df: df.assign(event_type=["REFUND"] + list(df["event_type"][1:])),
     "expect_column_values_to_be_in_set(event_type)"),
    (lambda df: df.assign(event_ts=[0] + list(df["event_ts"][1:])),
     "expect_column_values_to_be_between(event_ts)"),
    (lambda df: df.assign(user_id=[None] + list(df["user_id"][1:])),
     "expect_column_values_to_not_be_null(user_id)"),
    (lambda df: df.drop(columns=["country"]), "expect_column_to_exist(country)"),
], ids=["duplicate_event_id", "unknown_currency", "risk_score_3", "negative_amount",
        "five_digit_mcc", "unknown_event_type", "event_ts_1970", "null_user_id",
        "missing_column"])
def test_checkpoint_fails_a_bad_batch_naming_the_expectation(breakage, failed):
    outcome = expectations.run_transaction_checkpoint(breakage(_good_batch()))
    assert not outcome.success
    assert failed in outcome.failed_expectations
    assert outcome.statistics["unsuccessful_expectations"] == len(outcome.failed_expectations)

"""The Great Expectations checkpoint on feature history rows: it passes on a correct history
and names each broken rule with the offending rows (entity and day)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import orjson
import pandas as pd
import pytest

from mercury.features.definition.compile import load_compiled
from mercury.features.executors.events import normalise
from mercury.features.executors.reference import first_arrivals, values_for
from mercury.features.offline.history_checks import (
    END_OF_DAY,
    history_suite_spec,
    run_history_checkpoint,
    value_schema,
)
from tests.feature_history_fixtures import day_end_ms, history_stream

FIRST = date(2024, 3, 4)
LAST = FIRST + timedelta(days=3)


def _history(ref: str) -> pd.DataFrame:
    """History rows of [FIRST, LAST] in the table's layout, from the reference executor."""
    (fs,) = load_compiled([ref])
    events = first_arrivals([e for r in history_stream(FIRST, 4)
                             if (e := normalise(fs, r)) is not None])
    rows = []
    day = FIRST
    while day <= LAST:
        t = day_end_ms(day)
        for entity, values in sorted(values_for(fs, events, t).items()):
            rows.append({"entity_id": entity, "as_of_date": day, "as_of_ms": t,
                         **{k: orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()
                            for k, v in values.items()},
                         "computed_at": datetime(2024, 3, 9, tzinfo=UTC)})
        day += timedelta(days=1)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def spending():
    (fs,) = load_compiled(["spending.v1"])
    return fs, _history("spending.v1")


def test_suite_follows_the_definition(spending):
    fs, _ = spending
    specs = history_suite_spec(fs, FIRST, LAST)
    kinds = [(s.type, s.kwargs.get("column")) for s in specs]
    assert ("expect_column_values_to_be_json_parseable", "merchants") in kinds
    assert ("expect_column_pair_values_to_be_equal", None) in kinds
    # Counts are integers >= 0 under exactly their window labels ("24h" is keyed "1d").
    counts = value_schema(fs, next(f for f in fs.features if f.name == "settled_count"))
    assert counts["required"] == ["1d", "7d", "30d"]
    assert counts["properties"]["7d"] == {"type": "integer", "minimum": 0}
    assert counts["additionalProperties"] is False
    # Money is keyed by currency, and by category outside it.
    by_category = value_schema(fs, next(f for f in fs.features
                                        if f.name == "settled_by_category"))
    assert by_category["properties"]["7d"]["additionalProperties"]["additionalProperties"] == \
        {"type": "number"}
    with pytest.raises(ValueError, match="before start"):
        history_suite_spec(fs, LAST, FIRST)


def test_a_correct_history_passes(spending):
    fs, df = spending
    outcome = run_history_checkpoint(fs, df, FIRST, LAST)
    assert outcome.success, outcome.details
    assert outcome.statistics["evaluated_expectations"] == len(history_suite_spec(fs, FIRST,
                                                                                  LAST))
    assert END_OF_DAY not in df.columns  # derived for GX only, the caller's frame untouched


def test_each_broken_rule_is_named_with_its_rows(spending):
    fs, df = spending
    bad = df.copy()
    bad.loc[0, "as_of_ms"] += 1  # not the end of its day
    bad.loc[1, "settled_count"] = '{"1d": -1, "30d": 0, "7d": 0}'  # a negative count
    bad.loc[2, "merchants"] = "{not json"
    bad.loc[3, "settled_amount"] = '{"1d": {}, "30d": {}, "7d": {}}'  # a window missing
    bad = pd.concat([bad, bad.iloc[[4]]], ignore_index=True)  # (entity, day) twice
    outcome = run_history_checkpoint(fs, bad, FIRST + timedelta(days=1), LAST)  # day 1 out
    # Exactly these (the schema check of the unparseable cell fails too, as an exception).
    assert set(outcome.failed_expectations) == {
        "expect_column_pair_values_to_be_equal(as_of_ms, end_of_day_ms)",
        "expect_column_values_to_match_json_schema(settled_count)",
        "expect_column_values_to_be_json_parseable(merchants)",
        "expect_column_values_to_match_json_schema(merchants)",
        "expect_column_values_to_match_json_schema(settled_amount)",
        "expect_compound_columns_to_be_unique(entity_id, as_of_date)",
        "expect_column_values_to_be_between(as_of_date)"}

    def row(i: int) -> str:
        return f"entity_id={df.loc[i, 'entity_id']} as_of_date={df.loc[i, 'as_of_date']}"

    details = outcome.details
    assert details["expect_column_pair_values_to_be_equal(as_of_ms, end_of_day_ms)"][
        "examples"] == [row(0)]
    assert details["expect_column_values_to_match_json_schema(settled_count)"][
        "examples"] == [row(1)]
    assert details["expect_column_values_to_be_json_parseable(merchants)"][
        "examples"] == [row(2)]
    assert details["expect_column_values_to_match_json_schema(settled_amount)"][
        "examples"] == [row(3)]


def test_an_empty_range_fails(spending):
    fs, df = spending
    outcome = run_history_checkpoint(fs, df.iloc[0:0], FIRST, LAST)
    assert not outcome.success
    assert outcome.failed_expectations == ["expect_table_row_count_to_be_between()"]
    assert outcome.details["expect_table_row_count_to_be_between()"]["observed_value"] == 0

"""The Great Expectations checkpoint on a feature history table, before a version is promoted.

Design notes: docs/BATCH.md, "The history checkpoint in detail".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from mercury.features.definition.dsl import Aggregate, FeatureSet, LastN, Latest
from mercury.features.definition.windows import window
from mercury.quality.expectations import CheckpointOutcome, ExpectationSpec, outcome_of

if TYPE_CHECKING:
    import pandas as pd

    from mercury.config import Settings

KEY_COLUMNS = ("entity_id", "as_of_date", "as_of_ms", "computed_at")
# Derived here from as_of_date (see the module doc); not a column of the table.
END_OF_DAY = "end_of_day_ms"
# Examples in a failure name the row by these columns.
ROW_ID = ["entity_id", "as_of_date"]
DAY_MS = 86_400_000
EXAMPLES = 5


class HistoryCheckFailed(RuntimeError):
    """The history rows of a range failed the checkpoint; the message names every failed
    expectation with examples. ``outcome`` holds the details."""

    def __init__(self, table: str, outcome: CheckpointOutcome):
        self.outcome = outcome
        lines = [f"{table}: {len(outcome.failed_expectations)} expectation(s) failed "
                 f"(of {outcome.statistics.get('evaluated_expectations', '?')}):"]
        for name in outcome.failed_expectations:
            lines.append(f"  - {name}: {outcome.details.get(name, {})}")
        super().__init__("\n".join(lines))


# --- the suite as data ----------------------------------------------------------------------


def _leaf_schema(op: str) -> dict:
    if op in ("count", "distinct_count"):
        return {"type": "integer", "minimum": 0}
    if op == "sum":
        return {"type": "number"}
    return {"type": ["number", "null"]}  # min, max, avg of nothing is null


def _object_of(inner: dict) -> dict:
    """A JSON object with any keys (a group or a currency), each value ``inner``."""
    return {"type": "object", "additionalProperties": inner}


def value_schema(feature_set: FeatureSet, feature) -> dict:
    """The JSON schema of one feature's value, from its definition (see the module doc)."""
    if isinstance(feature, Aggregate):
        leaf = _leaf_schema(feature.op)
        if feature.column is not None and feature_set.source.currency_of(feature.column):
            leaf = _object_of(leaf)
        if feature.group_by is not None:
            leaf = _object_of(leaf)
        labels = [window(text).label for text in feature.windows]
        return {"type": "object", "properties": {label: leaf for label in labels},
                "required": labels, "additionalProperties": False}
    if isinstance(feature, LastN):
        item = {"type": "object", "required": ["item", "ts", "status"],
                "properties": {"ts": {"type": "integer"}, "item": {"type": "string"},
                               "status": {"type": ["string", "null"]}}}
        return {"type": "array", "maxItems": feature.n, "items": item}
    if isinstance(feature, Latest):
        one = {"type": ["object", "null"], "required": ["ts", *feature.fields],
               "properties": {"ts": {"type": "integer"}}}
        return one if feature.per is None else _object_of(one)
    raise TypeError(f"{feature_set.ref}: no history schema for {type(feature).__name__}")


def history_suite_spec(feature_set: FeatureSet, start: date,
                       end: date) -> tuple[ExpectationSpec, ...]:
    """The expectations for the history rows of ``feature_set`` in [start, end]."""
    if end < start:
        raise ValueError(f"{feature_set.ref}: end {end} is before start {start}")
    specs = [ExpectationSpec("expect_table_row_count_to_be_between", {"min_value": 1})]
    for column in (*KEY_COLUMNS, *(f.name for f in feature_set.features)):
        specs.append(ExpectationSpec("expect_column_to_exist", {"column": column}))
    for column in KEY_COLUMNS:
        specs.append(ExpectationSpec("expect_column_values_to_not_be_null", {"column": column}))
    specs += [
        ExpectationSpec("expect_compound_columns_to_be_unique", {"column_list": ROW_ID}),
        ExpectationSpec("expect_column_values_to_be_between",
                        {"column": "as_of_date", "min_value": start.isoformat(),
                         "max_value": end.isoformat()}),
        ExpectationSpec("expect_column_pair_values_to_be_equal",
                        {"column_A": "as_of_ms", "column_B": END_OF_DAY}),
    ]
    for feature in feature_set.features:
        specs.append(ExpectationSpec("expect_column_values_to_be_json_parseable",
                                     {"column": feature.name}))
        specs.append(ExpectationSpec("expect_column_values_to_match_json_schema",
                                     {"column": feature.name,
                                      "json_schema": value_schema(feature_set, feature)}))
    return tuple(specs)


def suite_document(feature_set: FeatureSet, start: date, end: date) -> dict:
    """The suite in GX's JSON layout, for a reader or a report."""
    return {"name": f"{feature_set.name}_v{feature_set.version}_history",
            "meta": {"feature_set": feature_set.ref, "start": start.isoformat(),
                     "end": end.isoformat()},
            "expectations": [spec.to_json() for spec in
                             history_suite_spec(feature_set, start, end)]}


# --- running --------------------------------------------------------------------------------


def end_of_day_ms(day: date) -> int:
    """The last millisecond of ``day`` in UTC: what a history row's ``as_of_ms`` must be."""
    return int(datetime.combine(day + timedelta(days=1), time(), UTC).timestamp() * 1000) - 1


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The frame GX validates: ``as_of_date`` as Python dates (GX compares them with the ISO
    range bounds; a datetime64 column it refuses to), plus ``end_of_day_ms``."""
    import pandas as pd

    if "as_of_date" not in df.columns:
        return df
    days = pd.to_datetime(df["as_of_date"])
    end = (days - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1) + DAY_MS - 1
    return df.assign(as_of_date=days.dt.date, **{END_OF_DAY: end})


def run_history_checkpoint(feature_set: FeatureSet, df: pd.DataFrame, start: date,
                           end: date) -> CheckpointOutcome:
    """Validate history rows (a pandas DataFrame in the table's layout) against the suite."""
    from mercury.quality.expectations import dataframe_checkpoint

    # A fresh checkpoint per run: the suite depends on the range, and nothing is kept.
    name = f"{feature_set.name}_v{feature_set.version}_history"
    result_format: dict[str, Any] = {"result_format": "SUMMARY",
                                     "partial_unexpected_count": EXAMPLES}
    if all(c in df.columns for c in ROW_ID):
        result_format["unexpected_index_column_names"] = ROW_ID
    checkpoint = dataframe_checkpoint(name, name, history_suite_spec(feature_set, start, end),
                                      result_format)
    result = checkpoint.run(batch_parameters={"dataframe": prepare(df)})
    return outcome_of(result, _row_name, EXAMPLES)


def _row_name(row: Any) -> str:
    if isinstance(row, dict):
        return " ".join(f"{k}={row[k]}" for k in ROW_ID if k in row)
    return str(row)


def check_history(settings: Settings, feature_set: FeatureSet, start: date, end: date, *,
                  columns: Sequence[str] | None = None) -> CheckpointOutcome:
    """Read the history rows of [start, end] and run the checkpoint; raise
    ``HistoryCheckFailed`` when an expectation fails, else return the outcome."""
    from mercury.features.offline import history

    table = history.read(settings, feature_set, start=start, end=end)
    if columns is not None:
        table = table.select(list(columns))
    outcome = run_history_checkpoint(feature_set, table.to_pandas(), start, end)
    if not outcome.success:
        raise HistoryCheckFailed(history.table_identifier(settings, feature_set), outcome)
    return outcome

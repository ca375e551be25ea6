"""Great Expectations suites derived from the contracts, and the checkpoint that gates a batch.

A suite is built from the latest version of a subject's Avro contract, so a field added to the
contract is checked without editing this module:

- every field of the contract is a column (extra columns are allowed: producers add fields
  before the contract knows them);
- a field whose type has no ``null`` branch is never null;
- the stream's event id is unique in the batch (run the gate on deduplicated batches: the lake
  table or a compaction output, not the raw stream, where retries repeat ids);
- an enum field takes only its symbols; a field with a ``format`` takes only its code list
  (ISO 4217, ISO 3166-1, ISO 639-1) or pattern (MCC, uuid);
- a timestamp field (epoch milliseconds, as on the stream) is not before 2000-01-01;
- and the ranges the Avro types cannot state, in ``DOMAIN_RANGES`` (risk_score in [0, 1],
  amount >= 0).

The suite is plain data first (``suite_spec``: no Great Expectations import) and becomes GX
objects only to run. ``write_suite_files`` writes it as JSON under ``expectations/suites/`` for
review and for tools that read GX files; a test fails when those files are stale.

Great Expectations takes ~10 s to import: it is imported inside the functions that run it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mercury.config import REPO_ROOT
from mercury.contracts import registry, schemas
from mercury.contracts.avro_walk import named_types, resolve
from mercury.contracts.code_lists import COUNTRIES, CURRENCIES, LANGUAGES

if TYPE_CHECKING:
    import pandas as pd

SUITES_DIR = REPO_ROOT / "expectations" / "suites"
# Subjects whose batches are gated by a checkpoint; their suites are written to SUITES_DIR.
GATED_SUBJECTS = ("transaction",)

EARLIEST_EVENT_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: older timestamps are corrupt

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_FORMAT_SETS: dict[str, frozenset[str]] = {
    "iso4217": CURRENCIES,
    "iso3166_alpha2": COUNTRIES,
    "iso639_1": LANGUAGES,
}
_FORMAT_PATTERNS: dict[str, str] = {"mcc": r"^[0-9]{4}$", "uuid": _UUID}
_TIMESTAMP_TYPES = {"timestamp-millis"}

# Business ranges a contract type cannot express: subject -> field -> (min, max), inclusive.
DOMAIN_RANGES: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "transaction": {"amount": (0.0, None), "risk_score": (0.0, 1.0)},
    "risk_signal": {"score": (0.0, 1.0)},
}


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation as data: its GX type name and keyword arguments."""

    type: str
    kwargs: Mapping[str, Any]

    @property
    def name(self) -> str:
        """A readable id, e.g. ``expect_column_values_to_be_unique(event_id)``."""
        if "column_A" in self.kwargs:
            return f"{self.type}({self.kwargs['column_A']}, {self.kwargs['column_B']})"
        if "column_list" in self.kwargs:
            return f"{self.type}({', '.join(self.kwargs['column_list'])})"
        return f"{self.type}({self.kwargs.get('column', '')})"

    def to_json(self) -> dict:
        return {"type": self.type, "kwargs": dict(self.kwargs)}


@dataclass(frozen=True)
class CheckpointOutcome:
    success: bool
    failed_expectations: list[str]
    statistics: dict[str, Any]
    # Per failed expectation: unexpected_count and a few unexpected values (when GX gives them).
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


def _event_id_field(subject: str) -> str | None:
    for s in registry.STREAMS:
        if s.schema_subject == subject and s.event_id_field:
            return s.event_id_field
    return None


def suite_spec(subject: str) -> tuple[ExpectationSpec, ...]:
    """The expectations for a batch of ``subject`` records, from its latest contract."""
    root = schemas.load(subject).schema
    names = named_types(root)
    specs: list[ExpectationSpec] = []
    event_id = _event_id_field(subject)
    ranges = DOMAIN_RANGES.get(subject, {})
    for fdef in root["fields"]:
        column = fdef["name"]
        node = resolve(fdef["type"], names)
        nullable = isinstance(node, list) and any(resolve(b, names) == "null" for b in node)
        if isinstance(node, list):
            branches = [resolve(b, names) for b in node if resolve(b, names) != "null"]
            node = branches[0] if len(branches) == 1 else None
        specs.append(ExpectationSpec("expect_column_to_exist", {"column": column}))
        if not nullable:
            specs.append(ExpectationSpec("expect_column_values_to_not_be_null",
                                         {"column": column}))
        if column == event_id:
            specs.append(ExpectationSpec("expect_column_values_to_be_unique", {"column": column}))
        if isinstance(node, dict) and node.get("type") == "enum":
            specs.append(ExpectationSpec("expect_column_values_to_be_in_set",
                                         {"column": column, "value_set": list(node["symbols"])}))
        fmt = fdef.get("format")
        if fmt in _FORMAT_SETS:
            specs.append(ExpectationSpec("expect_column_values_to_be_in_set",
                                         {"column": column,
                                          "value_set": sorted(_FORMAT_SETS[fmt])}))
        elif fmt in _FORMAT_PATTERNS:
            specs.append(ExpectationSpec("expect_column_values_to_match_regex",
                                         {"column": column, "regex": _FORMAT_PATTERNS[fmt]}))
        if isinstance(node, dict) and node.get("logicalType") in _TIMESTAMP_TYPES:
            specs.append(ExpectationSpec("expect_column_values_to_be_between",
                                         {"column": column, "min_value": EARLIEST_EVENT_MS}))
        if column in ranges:
            low, high = ranges[column]
            kwargs: dict[str, Any] = {"column": column}
            if low is not None:
                kwargs["min_value"] = low
            if high is not None:
                kwargs["max_value"] = high
            specs.append(ExpectationSpec("expect_column_values_to_be_between", kwargs))
    unknown = set(ranges) - {f["name"] for f in root["fields"]}
    if unknown:
        raise ValueError(f"DOMAIN_RANGES[{subject!r}] names fields the contract lacks: {unknown}")
    return tuple(specs)


def suite_document(subject: str) -> dict:
    """The suite in GX's JSON layout (without the random ids GX adds when it stores one)."""
    contract = schemas.load(subject)
    return {
        "name": suite_name(subject),
        "meta": {"generated_by": "mercury.quality.expectations.write_suite_files",
                 "contract": f"{subject} v{contract.version}"},
        "expectations": [spec.to_json() for spec in suite_spec(subject)],
    }


def suite_name(subject: str) -> str:
    return f"{subject}_contract"


def write_suite_files(folder: Path = SUITES_DIR) -> list[Path]:
    """Write the suite of each gated subject as ``<folder>/<subject>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for subject in GATED_SUBJECTS:
        path = folder / f"{subject}.json"
        path.write_text(json.dumps(suite_document(subject), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


# --- running ---------------------------------------------------------------------------------


def dataframe_checkpoint(name: str, suite_name: str, specs, result_format: dict):
    """An ephemeral GX context (in memory: no files, analytics or progress bars) holding one
    pandas dataframe asset, the suite built from ``specs`` (``ExpectationSpec``s), its
    validation definition and a checkpoint ``<name>_gate``. Run it with
    ``batch_parameters={"dataframe": df}``."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(),
                               analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch = context.data_sources.add_pandas(name=name).add_dataframe_asset(
        name=name).add_batch_definition_whole_dataframe(name="whole_batch")
    suite = gx.ExpectationSuite(name=suite_name)
    for spec in specs:
        kind = "".join(part.capitalize() for part in spec.type.split("_"))
        suite.add_expectation(getattr(gxe, kind)(**spec.kwargs))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=context.suites.add(suite)))
    return context.checkpoints.add(gx.Checkpoint(
        name=f"{name}_gate", validation_definitions=[validation], result_format=result_format))


@cache
def _checkpoint(subject: str):
    """The subject's checkpoint, built once per process."""
    return dataframe_checkpoint(subject, suite_name(subject), suite_spec(subject),
                                {"result_format": "SUMMARY"})


def _timestamps_as_epoch_ms(subject: str, df: pd.DataFrame) -> pd.DataFrame:
    """Datetime columns of timestamp fields (e.g. a batch read from the lake) as epoch ms."""
    import pandas as pd

    root = schemas.load(subject).schema
    names = named_types(root)
    converted = {}
    for fdef in root["fields"]:
        column = fdef["name"]
        if column not in df.columns or not pd.api.types.is_datetime64_any_dtype(df[column]):
            continue
        node = resolve(fdef["type"], names)
        if isinstance(node, list):
            node = next((resolve(b, names) for b in node if resolve(b, names) != "null"), None)
        if isinstance(node, dict) and node.get("logicalType") in _TIMESTAMP_TYPES:
            series = df[column]
            epoch = pd.Timestamp(0, tz="UTC") if series.dt.tz is not None else pd.Timestamp(0)
            converted[column] = (series - epoch) // pd.Timedelta(milliseconds=1)
    return df.assign(**converted) if converted else df


def run_checkpoint(subject: str, df: pd.DataFrame) -> CheckpointOutcome:
    """Validate a batch of ``subject`` records (a pandas DataFrame) against its suite."""
    checkpoint = _checkpoint(subject)
    result = checkpoint.run(batch_parameters={"dataframe": _timestamps_as_epoch_ms(subject, df)})
    return outcome_of(result)


def outcome_of(result, row_name: Callable[[Any], str] | None = None,
               examples: int = 5) -> CheckpointOutcome:
    """A checkpoint result as plain values: each failed expectation by name, with what GX
    observed (count, a few unexpected values, and rows named by ``row_name`` when the
    checkpoint was asked for their index columns)."""
    failed: list[str] = []
    details: dict[str, dict[str, Any]] = {}
    statistics: dict[str, Any] = {}
    for validation in result.run_results.values():
        statistics = dict(validation.statistics)
        for item in validation.results:
            if item.success:
                continue
            config = item.expectation_config
            name = ExpectationSpec(config.type, dict(config.kwargs)).name
            failed.append(name)
            found = item.result or {}
            detail = {key: found[key] for key in
                      ("observed_value", "unexpected_count", "partial_unexpected_list")
                      if found.get(key) is not None}
            rows = found.get("partial_unexpected_index_list")
            if rows and row_name is not None:
                detail["examples"] = [row_name(r) for r in rows[:examples]]
            message = _exception_message(item.exception_info)
            if message:
                detail["exception"] = message
            details[name] = detail
    return CheckpointOutcome(success=bool(result.success), failed_expectations=failed,
                             statistics=statistics, details=details)


def _exception_message(info: Any) -> str | None:
    """The first error message in GX's exception_info (flat, or keyed by metric)."""
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def run_transaction_checkpoint(df: pd.DataFrame) -> CheckpointOutcome:
    """The gate for a batch of transactions (see the module doc for what it checks)."""
    return run_checkpoint("transaction", df)

"""Drift: the feature values the assistant was served against the training distribution of
the model version that used them, as PSI per feature (docs/DRIFT.md).

- Served side: the audit lake table (``audit.inference_requests``, loaded by the
  ``audit_warehouse`` DAG from the context API's audit records): per request
  ``served_features_json`` ({set: {feature: value}}), ``feature_versions`` and
  ``llm_model_version``. Values that came from a fallback (``degraded_parts``) are counted
  apart, never compared: a population prior is not what the store served.
- Training side: the Parquet training set the registry (``drift.models`` in the settings)
  names for that model version, one JSON column per feature (``<set>__<feature>``), as
  ``spark_jobs.training_set`` writes it. A null there (no counting event yet) is what the
  online reader serves for such a user: the set's empty values.
- A "feature" here is one scalar leaf of a feature's value, ``<set ref>:<path>``
  (``spending.v1:settled_count.7d``, ``spending.v1:settled_amount.7d.EUR``): a list counts by
  its length (``...recent_purchases.length``). A leaf a row lacks (a currency the user never
  paid in) falls in the ``missing`` bin. Instants (``ts``, ``*_ts``, ``*_at``) and identifiers
  (``*_id``) are left out: a served instant is always later than a training one and an id is
  new by nature, so their PSI would be large on every day and mean nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from mercury.quality.psi import Bins, Kind, bins_from, psi

if TYPE_CHECKING:
    import pyarrow as pa

    from mercury.config import DriftConfig, DriftModelConfig, Settings

AUDIT_STREAM = "inference_audit"
STABLE, MODERATE, DRIFTED = "stable", "moderate", "drifted"
TOO_FEW, ABSENT, NOT_SERVED = "too_few", "absent_from_training", "not_served"


def leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The scalar leaves of a feature value: maps by key, lists by length; nulls, instants and
    identifiers left out."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if not _not_a_distribution(key):
                yield from leaves(inner, f"{path}.{key}")
    elif isinstance(value, list):
        yield f"{path}.length", len(value)
    elif value is not None:  # a null is the leaf missing: counted as such by the callers
        yield path, value


def _not_a_distribution(key: str) -> bool:
    return key == "ts" or key.endswith(("_ts", "_at", "_id"))


@dataclass(frozen=True)
class TrainingProfile:
    """Bins and expected counts of every leaf of a training set."""

    model_version: str
    training_set: str
    rows: int
    set_refs: dict[str, str]  # set name -> ref, e.g. spending -> spending.v1
    bins: dict[str, Bins]
    expected: dict[str, list[int]]


def training_profile(model_version: str, model: DriftModelConfig, quantiles: int,
                     table: pa.Table | None = None) -> TrainingProfile:
    """The profile of ``model``'s training set (read from ``model.training_set`` unless
    ``table`` is given). A set whose columns the training set lacks is a ValueError naming
    the model, the path and the columns."""
    from mercury.features.offline.training import feature_column, resolve
    from mercury.features.reader import decode

    feature_sets = resolve(list(model.feature_sets))
    columns = {feature_column(fs, f.name): (fs, f.name)
               for fs in feature_sets for f in fs.features}
    if table is None:
        table = _read_parquet(model.training_set, list(columns))
    lacking = sorted(set(columns) - set(table.column_names))
    if lacking:
        raise ValueError(f"drift.models[{model_version!r}]: the training set "
                         f"{model.training_set} has no columns {lacking} (built from other "
                         f"feature sets than {list(model.feature_sets)}?)")
    values: dict[str, list[Any]] = defaultdict(list)
    for column, (fs, name) in columns.items():
        empty = decode(fs, {}, 0)[name]  # what the service serves before any event
        for cell in table.column(column).to_pylist():
            parsed = orjson.loads(cell) if isinstance(cell, str | bytes) else cell
            for path, leaf in leaves(empty if parsed is None else parsed, f"{fs.ref}:{name}"):
                values[path].append(leaf)
    rows = table.num_rows
    bins = {path: bins_from(found, quantiles) for path, found in values.items()}
    expected = {path: bins[path].counts(found, missing=rows - len(found))
                for path, found in values.items()}
    return TrainingProfile(model_version, model.training_set, rows,
                           {fs.name: fs.ref for fs in feature_sets}, bins, expected)


def _read_parquet(path: str, columns: list[str]) -> pa.Table:
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(path, format="parquet")  # Spark's folder; _SUCCESS is skipped
    except (FileNotFoundError, OSError) as exc:
        raise ValueError(f"drift: cannot read the training set {path}: {exc}") from None
    present = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=present)


@dataclass
class FeatureDrift:
    feature: str  # <set ref>:<path>
    kind: Kind | None
    status: str
    served: int  # values served (rows of the set in the range, missing leaves included)
    psi: float | None = None

    @property
    def feature_set(self) -> str:
        return self.feature.partition(":")[0]

    @property
    def path(self) -> str:
        return self.feature.partition(":")[2]


@dataclass
class DriftReport:
    model_version: str
    training_set: str
    since_ms: int
    until_ms: int
    training_rows: int = 0
    requests: int = 0
    compared: Counter = field(default_factory=Counter)  # set ref -> requests compared
    other_version: Counter = field(default_factory=Counter)  # set ref served -> requests
    degraded: Counter = field(default_factory=Counter)  # set name -> requests
    features: list[FeatureDrift] = field(default_factory=list)

    def with_status(self, *statuses: str) -> list[FeatureDrift]:
        return [f for f in self.features if f.status in statuses]

    def table(self) -> list[str]:
        """One line per feature, the largest PSI first."""
        ordered = sorted(self.features, key=lambda f: -1.0 if f.psi is None else f.psi,
                         reverse=True)
        return [f"{f.feature:60s} {'-' if f.psi is None else f'{f.psi:8.4f}':>8s} "
                f"{f.served:>8d}  {f.status}" for f in ordered]

    def summary(self) -> str:
        day = datetime.fromtimestamp(self.since_ms / 1000, tz=UTC).isoformat(timespec="minutes")
        counts = sorted(Counter(f.status for f in self.features).items())
        return (f"{self.model_version} since {day}: {self.requests} requests, compared "
                f"{dict(self.compared)}; " + ", ".join(f"{n} {s}" for s, n in counts))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("compared", "other_version", "degraded"):
            out[name] = dict(getattr(self, name))  # asdict would rebuild a Counter from pairs
        out["drifted"] = [f.feature for f in self.with_status(DRIFTED)]
        return out


def compare(profile: TrainingProfile, requests: Iterable[dict], config: DriftConfig,
            since_ms: int = 0, until_ms: int = 0) -> DriftReport:
    """PSI per leaf of the served values in ``requests`` (audit rows of the profile's model
    version) against the profile."""
    report = DriftReport(profile.model_version, profile.training_set, since_ms, until_ms,
                         training_rows=profile.rows)
    served: dict[str, Counter] = defaultdict(Counter)  # leaf -> bin label -> count
    unbinned: Counter = Counter()  # leaves the training set never had
    for row in requests:
        report.requests += 1
        versions = dict(row.get("feature_versions") or [])
        values = orjson.loads(row.get("served_features_json") or "{}")
        degraded = {part.partition(":")[0].removeprefix("features.")
                    for part in row.get("degraded_parts") or [] if part.startswith("features.")}
        for name, version in versions.items():
            ref = f"{name}.v{version}"
            if name not in profile.set_refs:
                continue  # a set this model was not trained on
            if ref != profile.set_refs[name]:
                report.other_version[ref] += 1
                continue
            if name in degraded or values.get(name) is None:
                report.degraded[name] += 1
                continue
            report.compared[ref] += 1
            for feature, value in values[name].items():
                for path, leaf in leaves(value, f"{ref}:{feature}"):
                    bins = profile.bins.get(path)
                    if bins is None:
                        unbinned[path] += 1
                    else:
                        served[path][bins.label(leaf)] += 1
    for path, bins in sorted(profile.bins.items()):
        rows = report.compared[path.partition(":")[0]]
        counted = served.get(path, Counter())
        counted["missing"] += rows - sum(counted.values())  # the leaf absent from a row
        actual = [counted.get(label, 0) for label in bins.labels]
        report.features.append(_judge(path, bins.kind, profile.expected[path], actual, rows,
                                      config))
    report.features += [FeatureDrift(path, None, ABSENT, n) for path, n in sorted(unbinned.items())]
    return report


def _judge(path: str, kind: Kind, expected: list[int], actual: list[int], rows: int,
           config: DriftConfig) -> FeatureDrift:
    if rows == 0:
        return FeatureDrift(path, kind, NOT_SERVED, 0)
    value = psi(expected, actual, config.epsilon)
    if rows < config.min_served:
        status = TOO_FEW
    elif value > config.psi_drift:
        status = DRIFTED
    elif value >= config.psi_warn:
        status = MODERATE
    else:
        status = STABLE
    return FeatureDrift(path, kind, status, rows, round(value, 6))


def served_requests(settings: Settings, model_version: str, since_ms: int,
                    until_ms: int) -> list[dict]:
    """Audit rows of ``model_version`` with ``since_ms <= event_ts < until_ms``."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import And

    from mercury.lake import tables
    from mercury.lake.predicates import EqualTo, GreaterThanOrEqual, LessThan

    # The table is partitioned by day of event_ts: a day's run reads one partition.
    where = And(And(GreaterThanOrEqual("event_ts", _iso(since_ms)),
                    LessThan("event_ts", _iso(until_ms))),
                EqualTo("llm_model_version", model_version))
    try:
        table = tables.read(settings, AUDIT_STREAM, where)
    except NoSuchTableError:
        return []  # nothing loaded yet: every feature is reported not served
    return table.select(["feature_versions", "served_features_json",
                         "degraded_parts"]).to_pylist()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def measure(settings: Settings, since_ms: int, until_ms: int,
            model_versions: Iterable[str] | None = None) -> list[DriftReport]:
    """One report per registered model version (or those named) over ``[since_ms,
    until_ms)`` of request time. An unregistered name is a ValueError listing the registry."""
    config = settings.drift
    names = list(config.models) if model_versions is None else list(model_versions)
    unknown = [n for n in names if n not in config.models]
    if unknown:
        raise ValueError(f"drift: model versions {unknown} are not in drift.models "
                         f"(registered: {sorted(config.models)})")
    reports = []
    for name in names:
        profile = training_profile(name, config.models[name], config.bins)
        rows = served_requests(settings, name, since_ms, until_ms)
        reports.append(compare(profile, rows, config, since_ms, until_ms))
    return reports

"""The drift job's Prometheus metrics, as a text file the job rewrites each run.

- ``mercury_feature_drift_psi{model_version,feature_set,feature}``: the last PSI of each
  judged feature (features with too few served values are left out: no number, no alert);
- ``mercury_feature_drift_last_success_timestamp_seconds{model_version}``: when the job last
  measured that model, so a job that stops running is noticed (the PSI gauges would
  otherwise keep their last value).

The file is in the exposition format node_exporter's textfile collector reads (and a
Pushgateway accepts); it is written under a temporary name and renamed, so a reader never
sees half of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mercury.drift.measure import DRIFTED, MODERATE, STABLE

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.drift.measure import DriftReport

JUDGED = (STABLE, MODERATE, DRIFTED)


def metrics_path(settings: Settings) -> Path:
    """In ``metrics_dir``: the folder the node exporter serves to Prometheus."""
    return settings.metrics_dir / "feature_drift.prom"


def write_metrics(reports: Iterable[DriftReport], path: Path, now_s: float) -> Path:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    psi = Gauge("mercury_feature_drift_psi", "PSI of served values against the training set",
                ["model_version", "feature_set", "feature"], registry=registry)
    last = Gauge("mercury_feature_drift_last_success_timestamp_seconds",
                 "When the drift job last measured the model version", ["model_version"],
                 registry=registry)
    for report in reports:
        last.labels(report.model_version).set(now_s)
        for feature in report.with_status(*JUDGED):
            psi.labels(report.model_version, feature.feature_set, feature.path).set(
                feature.psi or 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path

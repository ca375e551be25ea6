"""The feature_drift DAG's steps: thin glue over ``mercury.drift.measure``.

- ``measure_drift``: every registered model version's served values in the run's day
  against its training set; writes one JSON report per model under
  ``<data_dir>/drift/<model>/<day>.json`` and the Prometheus metrics file, logs one line per
  feature.
- ``retraining_signal``: from that result, what the retraining asset's event carries, or
  None when nothing drifted (then no event is emitted).

Importing this module is cheap: mercury is imported by the functions that use it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mercury_airflow.tasks import log_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from mercury.config import Settings


def measure_drift(settings: Settings, since: datetime, until: datetime, *,
                  log: Callable[[str], None] = log_line) -> dict[str, Any]:
    """Measure ``[since, until)``; returns ``{"day", "reports": {model: path}, "drifted":
    {model: [feature, ...]}}`` for XCom."""
    import orjson

    from mercury.drift.measure import DRIFTED, measure
    from mercury.drift.metrics import metrics_path, write_metrics

    if since.tzinfo is None or until <= since:
        raise ValueError(f"measure_drift: [{since}, {until}) is not a zoned, non-empty range")
    since_ms, until_ms = round(since.timestamp() * 1000), round(until.timestamp() * 1000)
    day = since.date().isoformat()
    reports = measure(settings, since_ms, until_ms)
    if not reports:
        log("no model version registered in drift.models: nothing to measure")
    written, drifted = {}, {}
    for report in reports:
        log(report.summary())
        for line in report.table():
            log(line)
        path = settings.data_dir / "drift" / report.model_version / f"{day}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
        written[report.model_version] = str(path)
        features = [f.feature for f in report.with_status(DRIFTED)]
        if features:
            drifted[report.model_version] = features
    log(f"metrics: {write_metrics(reports, metrics_path(settings), time.time())}")
    return {"day": day, "reports": written, "drifted": drifted}


def retraining_signal(result: dict[str, Any]) -> dict[str, Any] | None:
    """The retraining asset event's extra, or None when no feature drifted."""
    if not result.get("drifted"):
        return None
    return {"day": result["day"], "drifted": result["drifted"]}


def day_range(day: str | None, run_after: datetime) -> tuple[datetime, datetime]:
    """The UTC day to measure: ``day`` (YYYY-MM-DD) when given, else the day before
    ``run_after`` (a daily run measures yesterday, whole)."""
    from datetime import UTC, timedelta

    if day:
        try:
            start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"day: {day!r} is not a date YYYY-MM-DD") from None
    else:
        start = datetime.combine(run_after.astimezone(UTC).date() - timedelta(days=1),
                                 datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=1)

"""feature_drift: served feature values against each model version's training set, daily.

- ``measure``: for every model version in the registry (``drift.models`` in the settings:
  model version -> training set), yesterday's served values from the audit lake table
  against the training distribution, PSI per feature (``mercury.drift.measure``). Writes a
  JSON report per model under ``<data_dir>/drift/`` and the metrics file that
  ``FeatureDriftDetected`` alerts on.
- ``signal_retraining``: when a feature drifted (PSI above ``drift.psi_drift``), updates the
  ``feature_drift`` asset, whose event names the model versions and features; the ML team's
  retraining DAG schedules on it (example: ``retrain_on_feature_drift``). Skipped otherwise,
  so no event is emitted.

Runs at 02:30 UTC: the hourly ``audit_warehouse`` has loaded yesterday's last hour by then.
A day can be measured again by hand (param ``day``). docs/DRIFT.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowSkipException
from mercury_airflow.assets import FEATURE_DRIFT
from mercury_airflow.tasks import feature_drift as steps
from mercury_airflow.tasks import settings


@task
def measure(params=None, dag_run=None) -> dict:
    """PSI per feature of yesterday's (or ``day``'s) served values, per model version."""
    since, until = steps.day_range(params["day"], dag_run.run_after)
    return steps.measure_drift(settings(), since, until)


@task(outlets=[FEATURE_DRIFT])
def signal_retraining(result: dict, outlet_events=None) -> dict:
    """Emit the feature_drift asset event when something drifted; skip otherwise."""
    extra = steps.retraining_signal(result)
    if extra is None:
        raise AirflowSkipException("no feature drifted: no retraining signal")
    outlet_events[FEATURE_DRIFT].extra = extra
    return extra


with DAG(
    dag_id="feature_drift",
    description="PSI of served feature values against each model's training set; "
                "signals retraining on drift",
    schedule="30 2 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["monitoring", "drift", "ml"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=5)},
    params={"day": Param(None, type=["null", "string"], format="date",
                         description="the UTC day to measure (YYYY-MM-DD); empty: yesterday")},
    doc_md=__doc__,
):
    signal_retraining(measure())

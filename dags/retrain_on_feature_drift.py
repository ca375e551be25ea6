"""retrain_on_feature_drift: an example of the ML team's side of the retraining hook.

Scheduled on the ``feature_drift`` asset: a run starts after each ``feature_drift`` DAG run
that found a drifted feature. It only logs what drifted (the asset event's extra); a real
retraining DAG would build a new training set (``spark_jobs.training_set``) for the named
model versions, train, and register the new version in ``drift.models``. docs/DRIFT.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task
from mercury_airflow.assets import FEATURE_DRIFT


@task
def what_drifted(triggering_asset_events=None) -> dict:
    """The drifted model versions and features, merged over the events that started the run."""
    drifted: dict[str, list[str]] = {}
    for event in triggering_asset_events[FEATURE_DRIFT]:
        for model, features in (event.extra or {}).get("drifted", {}).items():
            drifted.setdefault(model, [])
            drifted[model] += [f for f in features if f not in drifted[model]]
    print(f"retraining asked for: {drifted}", flush=True)
    return drifted


with DAG(
    dag_id="retrain_on_feature_drift",
    description="Example consumer of the feature_drift asset (the ML team's retraining DAG)",
    schedule=[FEATURE_DRIFT],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["ml", "drift", "example"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=5)},
    doc_md=__doc__,
):
    what_drifted()

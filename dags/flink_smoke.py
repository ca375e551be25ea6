"""flink_smoke: prove that a PyFlink job can be submitted to the cluster and runs.

Submits ``flink_jobs/smoke.py`` through the Flink REST API (connection ``flink_default``),
waits until it and all its tasks run, checks it stays healthy and checkpoints for a few
seconds, then cancels it. The cancel is a teardown: it runs even when the check fails.
Triggered by hand or by tests (``airflow dags test flink_smoke``); it has no schedule.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, task
from mercury_airflow.operators.flink import (
    FlinkCancelJobOperator,
    FlinkJobHealthOperator,
    FlinkSubmitJobOperator,
)

SMOKE_JOB = Path(__file__).parents[1] / "flink_jobs" / "smoke.py"
SMOKE_STREAM = "smoke"


@task
def event_folder() -> str:
    """The smoke stream's folder in the local event log (created empty if missing)."""
    from mercury.config import load_settings

    settings = load_settings()
    folder = settings.event_log.root / SMOKE_STREAM
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder.resolve())


with DAG(
    dag_id="flink_smoke",
    description="Submit the PyFlink smoke job via REST, check it runs, cancel it",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["flink", "smoke", "platform"],
    default_args={"owner": "data-platform", "retries": 1, "retry_delay": timedelta(seconds=15)},
    doc_md=__doc__,
):
    submit = FlinkSubmitJobOperator(
        task_id="submit",
        py_file=str(SMOKE_JOB),
        job_args=["--events", event_folder(), "--job-name", "flink_smoke"],
        wait_for="RUNNING",
        # A failed wait cancels the job it submitted, so a retry never runs two copies.
        wait_timeout_s=180,
    )
    healthy = FlinkJobHealthOperator(task_id="stays_healthy", job_id=submit.output,
                                     observe_s=10, require_checkpoint=True)
    cancel = FlinkCancelJobOperator(task_id="cancel", job_id=submit.output)
    submit >> healthy >> cancel.as_teardown(setups=submit, on_failure_fail_dagrun=True)

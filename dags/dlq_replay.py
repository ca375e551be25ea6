"""dlq_replay: replay a stream's dead letters once the cause is fixed (triggered by hand).

First a dry run (what would come back, what still fails per rule; in the log and as XCom),
then the replay itself: dead letters that pass the current contract are produced again to
the stream with their original bytes, once (``mercury.quality.replay``: a ledger in the
shared operational store, Postgres, makes a retry on any worker or a second run a no-op).
Deploy the fix (contract, code list) before triggering.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task
from mercury_airflow.tasks import dlq_replay as steps
from mercury_airflow.tasks import settings


@task
def dry_run(params=None) -> dict:
    """Count what would be replayed and what still fails; change nothing."""
    return steps.replay(settings(), params["stream"], dry_run=True)


@task
def replay(params=None) -> dict:
    """Produce the dead letters that pass now; record them in the replay ledger."""
    return steps.replay(settings(), params["stream"], dry_run=False)


with DAG(
    dag_id="dlq_replay",
    description="Replay a stream's dead letters that pass the current contract, once",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["quality", "dead-letters", "replay"],
    default_args={"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={"stream": Param("transactions", enum=list(steps.REPLAYABLE),
                            description="the stream whose dead letters to replay")},
    doc_md=__doc__,
):
    dry_run() >> replay()

"""knowledge_indexer: keep the incremental knowledge indexer running, and watch it.

Every five minutes:
- ``ensure_running`` starts the indexer when it is down (``mercury knowledge indexer start``;
  in production the Kubernetes Deployment restarts it and this task only checks). A restart
  resumes from the group's committed offsets; the ledger makes the replayed batch harmless.
- ``check`` fails, naming the problem, when the heartbeat is older than
  ``HEARTBEAT_STALE_MS`` (stuck), or more than ``MAX_LAG`` changes wait in the stream (falling
  behind: documents are getting stale in answers). Pause the DAG to stop the indexer on purpose.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task
from mercury_airflow.tasks import knowledge_indexer as steps
from mercury_airflow.tasks import settings


@task
def ensure_running() -> str:
    """Start the indexer if it is down."""
    return steps.ensure_running(settings())


@task
def check() -> dict:
    """Fail when the heartbeat is stale or the stream's backlog is over the limit."""
    return steps.check(settings())


with DAG(
    dag_id="knowledge_indexer",
    description="Supervise the incremental knowledge indexer: restart it, check heartbeat/lag",
    schedule=timedelta(minutes=5),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["retrieval", "streaming", "supervision"],
    default_args={"owner": "assistant-platform", "retries": 1,
                  "retry_delay": timedelta(seconds=30)},
    doc_md=__doc__,
):
    ensure_running() >> check()

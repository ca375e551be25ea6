"""gdpr_erasure: erase the users whose erasure was requested (GDPR Art. 17), daily.

Requests are registered by `mercury privacy request-erasure --user <id> --request <ticket>`
(the privacy team's tooling calls the same function). The run lists what is pending and how
close each is to its 30-day deadline, then erases each from every store and writes the
deletion evidence (`compliance.erasure_evidence`; docs/COMPLIANCE.md, "Erasure"). A request
left within five days of its deadline fails the run after erasing the others, so on-call
sees it while there is time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task
from mercury_airflow.tasks import gdpr_erasure as steps
from mercury_airflow.tasks import settings


@task
def review(data_interval_end=None) -> dict:
    """Pending requests, their deadlines (tickets only: no user id in the log)."""
    return steps.review(settings(), data_interval_end)


@task
def erase() -> dict:
    """Erase every pending request; evidence per ticket; the register keeps only a hash."""
    return steps.erase(settings())


@task
def deadlines(reviewed: dict, erased: dict) -> None:
    """Fail if a request near its deadline is still not erased."""
    steps.check_deadlines(reviewed, erased)


with DAG(
    dag_id="gdpr_erasure",
    description="Erase users on request from every store, with evidence, within 30 days",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["privacy", "gdpr", "compliance"],
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": timedelta(minutes=10)},
    doc_md=__doc__,
):
    reviewed = review()
    deadlines(reviewed, erase())

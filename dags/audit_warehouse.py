"""audit_warehouse: the assistant's audit trail into the lake and the compliance marts, hourly.

- ``load`` (one mapped task per stream: ``inference_audit``, ``assistant_safety_outcomes``):
  validate what arrived since the last run into the lake tables ``audit.inference_requests``
  and ``audit.safety_outcomes``, upserting by request_id (delivery is at-least-once); invalid
  records go to the stream's dead-letter stream (replay them with ``dlq_replay``).
- ``build``: ``dbt build --select source:audit+`` on the configured target (Snowflake in
  production): staging dedupes by request_id again, then fct_inference_requests,
  fct_inference_retrieved_chunks, fct_safety_outcomes and the compliance_assistant_context
  view, with their tests. It updates the ``compliance_marts`` asset.

Both steps read from where the last run stopped (consumer offsets) and rebuild the marts
from the whole lake table, so a retry or a run after an outage needs no catch-up run:
catchup is off. One run at a time (the local DuckDB file has one writer). Who may see the
personal columns: docs/COMPLIANCE.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, task
from mercury_airflow.tasks import audit_warehouse as steps
from mercury_airflow.tasks import settings

COMPLIANCE_MARTS = Asset(name="compliance_marts", uri="mercury://warehouse/compliance")


@task
def load(stream: str) -> dict:
    """Validate one audit stream into its lake table."""
    return steps.load_audit_stream(settings(), stream)


@task(outlets=[COMPLIANCE_MARTS])
def build() -> dict:
    """dbt build of the audit staging models and the compliance marts, with their tests."""
    return steps.build_compliance_models(settings())


with DAG(
    dag_id="audit_warehouse",
    description="Load the audit streams into the lake, then build the compliance marts",
    schedule=timedelta(hours=1),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["audit", "compliance", "dbt", "lake"],
    default_args={"owner": "assistant-platform", "retries": 2,
                  "retry_delay": timedelta(minutes=2)},
    doc_md=__doc__,
):
    load.expand(stream=list(steps.AUDIT_STREAMS)) >> build()

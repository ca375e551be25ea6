"""quality_gate: the hourly anomaly gate of the raw streams, one mapped task per stream.

Each run judges the last arrival hour closed at its data interval's end (records whose
``ingest_ts`` lies in it) against the hours promoted before: volume against the seasonal
baseline, null and unknown-field rates, PSI of the value mix against the trailing week,
duplicate and late rates (``mercury.quality.anomaly``; thresholds in ``anomaly`` of the
settings). A breach quarantines the hour in the ledger (Postgres), sets
``mercury_quality_quarantined_hours`` (alert AnomalyHourQuarantined) and fails the task
without retries, naming the rules. The override, after checking:
``mercury quality release --stream S --hour H --reason ...`` (docs/QUALITY.md,
docs/runbooks/AnomalyHourQuarantined.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task
from mercury_airflow.tasks import quality_gate as steps
from mercury_airflow.tasks import settings


@task
def gate(stream: str, data_interval_end=None) -> dict:
    """Promote or quarantine the stream's last hour closed at the data interval's end (a
    manual run's interval is empty, at its logical date: it gates the hour before it)."""
    from airflow.sdk.exceptions import AirflowFailException

    from mercury.quality.hour_gate import HourQuarantined

    end_ms = int(data_interval_end.timestamp() * 1000)
    hour_ms = end_ms - end_ms % 3_600_000 - 3_600_000
    try:
        return steps.gate(settings(), stream, hour_ms)
    except HourQuarantined as exc:
        raise AirflowFailException(str(exc)) from exc  # a retry would judge the same hour


with DAG(
    dag_id="quality_gate",
    description="Hourly anomaly gate: promote each stream's arrival hour or quarantine it",
    schedule=timedelta(hours=1),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["quality", "anomaly", "lake"],
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": timedelta(minutes=2)},
    doc_md=__doc__,
):
    gate.expand(stream=list(steps.GATED_STREAMS))

"""Task outcomes for Prometheus: every task's success, retry and failure callbacks (set on
every DAG by the cluster policy in ``plugins/airflow_local_settings.py``) add one to
``mercury_airflow_task_outcomes_total{dag_id,task_id,outcome}`` in a metrics file in
``metrics_dir`` (``mercury.metrics_file``: read, add, rename, under a lock, because
tasks end in parallel). ``outcome`` is ``success``, ``retry`` or ``failed`` (for good, after
the retries: the one that also pages, ``alerting``).

Why callbacks and not Airflow's own StatsD/OTel metrics: they would need a StatsD exporter or
an OTel collector in the stack, and Airflow's names change between versions; three callbacks
and a file the node exporter already serves are the simplest real thing. On MWAA the workers'
files are not scraped: there the same family goes to a Pushgateway (or MWAA's CloudWatch
metrics are read instead).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
METRICS_FILE = "airflow_task_outcomes.prom"  # in settings.metrics_dir
SUCCESS, RETRY, FAILED = "success", "retry", "failed"


def count_outcome(context: Any, outcome: str) -> None:
    """Never raises: counting must not change how the task ends."""
    try:
        from mercury.metrics_file import Family, MetricsFile
        from mercury_airflow.tasks import settings

        family = Family("mercury_airflow_task_outcomes_total", "Airflow task outcomes",
                        ("dag_id", "task_id", "outcome"))
        ti = context["ti"]
        MetricsFile(settings().metrics_dir / METRICS_FILE, (family,)).update(
            add={family.name: {(ti.dag_id, ti.task_id, outcome): 1}})
    except Exception:  # noqa: BLE001 - logged, never raised (see above)
        log.exception("could not count the task's outcome")


def count_success(context: Any) -> None:
    count_outcome(context, SUCCESS)


def count_retry(context: Any) -> None:
    count_outcome(context, RETRY)


def count_failure(context: Any) -> None:
    count_outcome(context, FAILED)

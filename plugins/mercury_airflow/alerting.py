"""Paging when a task fails for good: every task's ``on_failure_callback`` (set on every DAG by
the cluster policy in ``plugins/airflow_local_settings.py``) posts an alert to Alertmanager,
which routes it like the Prometheus alerts (to the on-call pager in production; locally its
API and UI at ``monitoring.alertmanager_url``; in production Managed Prometheus's, which takes
SigV4-signed requests only: ``monitoring.alertmanager_sigv4_region``). Airflow calls it after
the last retry.

The alert names the DAG, task and run and the exception's type, not its message: a message may
quote a record, and alerts leave the platform (docs/COMPLIANCE.md).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)
RUNBOOK = "docs/runbooks/AirflowTaskFailed.md"
# Alertmanager resolves an alert at its end time; a failed task stays a page this long
# unless a rerun succeeds and on-call silences it first.
PAGE_FOR = timedelta(hours=4)


def failure_alert(dag_id: str, task_id: str, run_id: str, error_type: str,
                  at: datetime) -> dict[str, Any]:
    return {
        "labels": {"alertname": "AirflowTaskFailed", "severity": "page",
                   "dag_id": dag_id, "task_id": task_id},
        "annotations": {"summary": f"{dag_id}.{task_id} failed after its retries ({error_type})",
                        "run_id": run_id, "runbook_url": RUNBOOK},
        "startsAt": at.isoformat(), "endsAt": (at + PAGE_FOR).isoformat(),
    }


def page_on_failure(context: Any) -> None:
    """The callback. It never raises: a callback that fails would hide the task's failure."""
    try:
        import requests

        from mercury_airflow.tasks import settings

        ti = context["ti"]
        error = context.get("exception")
        alert = failure_alert(ti.dag_id, ti.task_id, ti.run_id,
                              type(error).__name__ if error else "unknown", datetime.now(UTC))
        monitoring = settings().monitoring
        url = f"{monitoring.alertmanager_url}/api/v2/alerts"
        body = json.dumps([alert])
        headers = {"Content-Type": "application/json"}
        if monitoring.alertmanager_sigv4_region:
            headers = signed_headers(url, body, headers, monitoring.alertmanager_sigv4_region)
        requests.post(url, data=body, headers=headers, timeout=5).raise_for_status()
    except Exception:  # noqa: BLE001 - logged, never raised (see above)
        log.exception("could not page for the failed task")


def signed_headers(url: str, body: str, headers: dict[str, str], region: str) -> dict[str, str]:
    """The headers of a SigV4-signed POST to Managed Prometheus's Alertmanager, signed with
    the worker's own AWS credentials (MWAA: its execution role, which may
    aps:CreateAlertManagerAlerts on the workspace)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(boto3.Session().get_credentials(), "aps", region).add_auth(request)
    return dict(request.headers.items())

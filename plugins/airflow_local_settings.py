"""Airflow cluster policies: house rules applied to every DAG when it is parsed, so no DAG
file can forget them (Airflow imports this module from the plugins folder, which it puts on
sys.path; on MWAA it ships in plugins.zip)."""

from __future__ import annotations

from typing import Any


def _add_callback(task: Any, attribute: str, callback: Any) -> None:
    """Append ``callback`` to the task's callbacks of that kind, keeping the DAG's own."""
    callbacks = getattr(task, attribute)
    existing = [] if callbacks is None else callbacks if isinstance(callbacks, list) \
        else [callbacks]
    if callback not in existing:
        setattr(task, attribute, [*existing, callback])


def task_policy(task: Any) -> None:
    """Every task pages through Alertmanager when it fails after its retries, and counts its
    outcome for Prometheus (``mercury_airflow.outcomes``)."""
    from mercury_airflow.alerting import page_on_failure
    from mercury_airflow.outcomes import count_failure, count_retry, count_success

    _add_callback(task, "on_failure_callback", page_on_failure)
    _add_callback(task, "on_failure_callback", count_failure)
    _add_callback(task, "on_retry_callback", count_retry)
    _add_callback(task, "on_success_callback", count_success)

"""Airflow cluster policies: house rules applied to every DAG when it is parsed, so no DAG
file can forget them (Airflow imports this module from the plugins folder, which it puts on
sys.path; on MWAA it ships in plugins.zip)."""

from __future__ import annotations

from typing import Any


def task_policy(task: Any) -> None:
    """Every task pages through Alertmanager when it fails after its retries."""
    from mercury_airflow.alerting import page_on_failure

    callbacks = task.on_failure_callback
    if callbacks is None:
        task.on_failure_callback = [page_on_failure]
    elif page_on_failure not in (callbacks if isinstance(callbacks, list) else [callbacks]):
        task.on_failure_callback = [*(callbacks if isinstance(callbacks, list)
                                      else [callbacks]), page_on_failure]

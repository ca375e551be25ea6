"""Operators for PyFlink jobs on a Flink cluster, through its REST API.

- FlinkSubmitJobOperator: submit a job file, wait until it runs (or finishes), push its id.
- FlinkJobHealthOperator: watch a running job for a while: still RUNNING, no restarts, and
  optionally a completed checkpoint.
- FlinkCancelJobOperator: cancel a job and wait until it is CANCELED (a natural teardown).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from mercury_airflow.hooks.flink_rest import FlinkRestHook


class FlinkRestOperator(BaseOperator):
    """The base of the operators that talk to a Flink cluster: the connection id, and the
    hook (made on first use, so building a DAG opens nothing)."""

    def __init__(self, *, flink_conn_id: str = FlinkRestHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.flink_conn_id = flink_conn_id

    @cached_property
    def hook(self) -> FlinkRestHook:
        return FlinkRestHook(self.flink_conn_id)

    @property
    def client(self):
        """The hook's ``mercury.ops.flink_rest.FlinkRestClient``."""
        return self.hook.get_conn()


class FlinkSubmitJobOperator(FlinkRestOperator):
    """Submit a PyFlink job file; return (push) its Flink job id.

    ``wait_for``: ``"RUNNING"`` (unbounded jobs: wait until the job and all its tasks run) or
    ``"FINISHED"`` (bounded jobs: wait until done). ``cancel_at_end`` cancels the job once the
    wait succeeded (smoke runs). If the wait fails the job is cancelled, never left behind.
    """

    template_fields: Sequence[str] = ("py_file", "job_args", "savepoint_path")
    ui_color = "#e6f1f2"

    def __init__(self, *, py_file: str, job_args: Sequence[Any] = (),
                 wait_for: str = "RUNNING", wait_timeout_s: float = 180.0,
                 parallelism: int | None = None, savepoint_path: str | None = None,
                 cancel_at_end: bool = False, **kwargs):
        super().__init__(**kwargs)
        if wait_for not in ("RUNNING", "FINISHED"):
            raise ValueError(f"wait_for must be RUNNING or FINISHED, not {wait_for!r}")
        self.py_file = py_file
        self.job_args = list(job_args)
        self.wait_for = wait_for
        self.wait_timeout_s = wait_timeout_s
        self.parallelism = parallelism
        self.savepoint_path = savepoint_path
        self.cancel_at_end = cancel_at_end
        self._job_id: str | None = None

    def execute(self, context) -> str:
        client = self.client
        self._job_id = job_id = client.run_python(
            self.py_file, [str(arg) for arg in self.job_args], parallelism=self.parallelism,
            savepoint_path=self.savepoint_path or None)
        self.log.info("submitted %s as Flink job %s", self.py_file, job_id)
        try:
            if self.wait_for == "RUNNING":
                client.wait_until_running(job_id, self.wait_timeout_s)
            else:
                client.wait_for_state(job_id, ["FINISHED"], self.wait_timeout_s)
        except Exception:
            _cancel_quietly(client, job_id, self.log)
            raise
        self.log.info("Flink job %s is %s", job_id, self.wait_for)
        if self.cancel_at_end and self.wait_for == "RUNNING":
            client.cancel(job_id)
            client.wait_for_state(job_id, ["CANCELED"], 60)
            self.log.info("Flink job %s cancelled", job_id)
        return job_id

    def on_kill(self) -> None:
        if self._job_id:
            _cancel_quietly(self.client, self._job_id, self.log)


class FlinkJobHealthOperator(FlinkRestOperator):
    """Fail unless the job stays RUNNING with all tasks running and no restart for
    ``observe_s`` seconds; with ``require_checkpoint`` it must also have completed one."""

    template_fields: Sequence[str] = ("job_id",)

    def __init__(self, *, job_id: str, observe_s: float = 10.0,
                 require_checkpoint: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.job_id = job_id
        self.observe_s = observe_s
        self.require_checkpoint = require_checkpoint

    def execute(self, context) -> None:
        from mercury.ops.flink_rest import tasks_not_running

        client = self.client
        deadline = time.monotonic() + self.observe_s
        while True:
            details = client.job(self.job_id)
            not_running = tasks_not_running(details)
            if details["state"] != "RUNNING" or not_running:
                raise RuntimeError(f"Flink job {self.job_id} is {details['state']}; "
                                   f"tasks not running: {not_running or 'none'}; "
                                   f"last failure: {client.failure(self.job_id)}")
            failure = client.failure(self.job_id)
            if failure:
                raise RuntimeError(f"Flink job {self.job_id} restarted after: {failure}")
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        if self.require_checkpoint:
            checkpoint = client.latest_checkpoint(self.job_id)
            if not checkpoint:
                raise RuntimeError(f"Flink job {self.job_id} completed no checkpoint in "
                                   f"{self.observe_s:.0f}s")
            self.log.info("latest checkpoint %s at %s", checkpoint.get("id"),
                          checkpoint.get("external_path"))
        self.log.info("Flink job %s healthy for %.0fs", self.job_id, self.observe_s)


class FlinkCancelJobOperator(FlinkRestOperator):
    """Cancel the job and wait until it is CANCELED; a job already ended is left as it is."""

    template_fields: Sequence[str] = ("job_id",)

    def __init__(self, *, job_id: str, timeout_s: float = 60.0, **kwargs):
        super().__init__(**kwargs)
        self.job_id = job_id
        self.timeout_s = timeout_s

    def execute(self, context) -> str:
        from mercury.ops.flink_rest import TERMINAL_STATES

        client = self.client
        state = client.job_state(self.job_id)
        if state in TERMINAL_STATES:
            self.log.info("Flink job %s already %s", self.job_id, state)
            return state
        client.cancel(self.job_id)
        state = client.wait_for_state(self.job_id, ["CANCELED"], self.timeout_s)
        self.log.info("Flink job %s %s", self.job_id, state)
        return state


def _cancel_quietly(client, job_id: str, log) -> None:
    try:
        client.cancel(job_id)
    except Exception as exc:  # the job may already have ended; the original error matters
        log.warning("could not cancel Flink job %s: %s", job_id, exc)

"""Operators for long-running streaming jobs: thin wrappers over ``mercury.ops.deployments``.

- DeployStreamingJobOperator: submit the job, restoring its last savepoint/checkpoint; push
  the job id. Safe to retry: a live job of the same name and arguments is kept.
- StopStreamingJobOperator: stop with a savepoint, recorded for the next deploy.
- WaitStreamingJobRunningOperator: wait until the job and all its tasks run.
- StreamingJobHealthOperator: fail, naming the problem, unless the job runs and checkpoints.

The deployment records live in the shared operational store (``ops_state`` in the mercury
settings: Postgres), so a retry on another worker restores from the same savepoint, and two
deploys of one job at once make one deployment.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from mercury_airflow.operators.flink import FlinkRestOperator
from mercury_airflow.tasks import settings


class DeployStreamingJobOperator(FlinkRestOperator):
    """Deploy ``py_file`` as the job ``job_name``; return the Flink job id."""

    template_fields: Sequence[str] = ("job_name", "py_file", "job_args",
                                      "allow_non_restored_state")
    ui_color = "#e6f1f2"

    def __init__(self, *, job_name: str, py_file: str, job_args: Sequence[Any] = (),
                 restore: bool = True, allow_non_restored_state: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.job_name = job_name
        self.py_file = py_file
        self.job_args = job_args
        self.restore = restore
        self.allow_non_restored_state = allow_non_restored_state

    def execute(self, context) -> str:
        from mercury.ops.deployments import deploy

        record = deploy(self.client, settings(), self.job_name, self.py_file,
                        [str(arg) for arg in self.job_args], self.restore,
                        allow_non_restored_state=self.allow_non_restored_state)
        self.log.info("%s is Flink job %s, restored from %s", self.job_name, record.job_id,
                      record.restored_from or "nothing (fresh state)")
        return record.job_id


class StopStreamingJobOperator(FlinkRestOperator):
    """Stop the deployed ``job_name`` with a savepoint; return the savepoint path (None if
    the job was not running: the next deploy then uses its retained checkpoints)."""

    template_fields: Sequence[str] = ("job_name",)

    def __init__(self, *, job_name: str, **kwargs):
        super().__init__(**kwargs)
        self.job_name = job_name

    def execute(self, context) -> str | None:
        from mercury.ops.deployments import stop

        record = stop(self.client, settings(), self.job_name)
        if record.last_savepoint_job_id != record.job_id:
            self.log.warning("%s (%s) was not running: no savepoint taken", self.job_name,
                             record.job_id)
            return None
        self.log.info("%s (%s) stopped with savepoint %s", self.job_name, record.job_id,
                      record.last_savepoint)
        return record.last_savepoint


class WaitStreamingJobRunningOperator(FlinkRestOperator):
    """Wait until the job and all its tasks are RUNNING; fail with its failure otherwise."""

    template_fields: Sequence[str] = ("job_id",)

    def __init__(self, *, job_id: str, timeout_s: float = 180.0, **kwargs):
        super().__init__(**kwargs)
        self.job_id = job_id
        self.timeout_s = timeout_s

    def execute(self, context) -> None:
        self.client.wait_until_running(self.job_id, self.timeout_s)
        self.log.info("Flink job %s and all its tasks are RUNNING", self.job_id)


class StreamingJobHealthOperator(FlinkRestOperator):
    """Fail unless ``job_name`` is RUNNING with all tasks and its last checkpoint is younger
    than ``max_checkpoint_age_s``. With ``wait_for_checkpoint_s`` (after a deploy) it first
    waits that long for the job's first checkpoint. Returns the report (XCom)."""

    template_fields: Sequence[str] = ("job_name", "max_checkpoint_age_s")

    def __init__(self, *, job_name: str, max_checkpoint_age_s: float = 120.0,
                 wait_for_checkpoint_s: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.job_name = job_name
        self.max_checkpoint_age_s = max_checkpoint_age_s
        self.wait_for_checkpoint_s = wait_for_checkpoint_s

    def execute(self, context) -> dict:
        from mercury.ops.deployments import health

        client = self.client
        deadline = time.monotonic() + self.wait_for_checkpoint_s
        while True:
            # Health is about the present, not the run's logical date: the clock is read
            # here, at the edge, and passed in.
            report = health(client, self.job_name, float(self.max_checkpoint_age_s),
                            now_ms=int(time.time() * 1000))
            if report.checkpoint_age_s is not None or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        if self.wait_for_checkpoint_s and report.checkpoint_age_s is None:
            raise RuntimeError(f"{self.job_name} completed no checkpoint within "
                               f"{self.wait_for_checkpoint_s:.0f}s")
        self.log.info("healthy: %s", report.summary())
        return dataclasses.asdict(report)

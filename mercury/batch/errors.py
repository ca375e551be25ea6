"""Errors of the batch submission path."""

from __future__ import annotations


class SparkJobFailed(RuntimeError):
    """A job run ended in another state than success; the message names the run (id,
    application, job), its state and the service's reason for it."""

    def __init__(self, message: str, *, job_run_id: str | None = None,
                 state: str | None = None) -> None:
        super().__init__(message)
        self.job_run_id = job_run_id
        self.state = state

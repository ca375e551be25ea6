"""Running the online-features job on a Flink cluster and knowing when it has caught up.

The job never finishes (it follows the event log), so "done" means: the validating operator
has read every line the log holds, the keyed operator's input has stopped growing, and a
checkpoint completed after that (which commits the dead-letter and lake part files).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from mercury.config import REPO_ROOT

JOB_FILE = REPO_ROOT / "flink_jobs" / "online_features.py"


@dataclass(frozen=True)
class Progress:
    lines_read: int      # raw lines validated (all streams)
    routed_read: int     # events that reached the keyed feature operator


def submit(client, config_path, job_name: str, savepoint_path: str | None = None,
           feature_sets: str = "", warm_start: str = "", wait: bool = True,
           engine: str = "sql") -> str:
    args = ["--config", str(config_path), "--job-name", job_name, "--engine", engine]
    if feature_sets:
        args += ["--feature-sets", feature_sets]
    if warm_start:
        args += ["--warm-start", warm_start]
    job_id = client.run_python(JOB_FILE, args, savepoint_path=savepoint_path)
    if wait:
        client.wait_until_running(job_id)
    return job_id


def progress(client, job_id: str) -> Progress:
    """Either engine's counters: the Python operators are named; in the SQL job, lines are
    what the sources emitted and "routed" what reached the online store's writer."""
    vertices = client.job(job_id)["vertices"]
    sql = not any("validate-and-route" in v["name"] for v in vertices)
    lines = routed = 0
    for vertex in vertices:
        name, metrics = vertex["name"], vertex["metrics"]
        if "validate-and-route" in name or (sql and name.startswith("Source: src_")):
            lines += metrics["read-records" if not sql else "write-records"]
        elif name.startswith("online-features") or "online_store" in name:
            routed += metrics["read-records"]
    return Progress(lines, routed)


FAILING_IN_A_LOOP = 5  # restarts while waiting for a job to catch up: a failure that returns


def wait_caught_up(client, job_id: str, expected_lines: int | None, timeout_s: float = 300.0,
                   settle_s: float = 3.0, report=None) -> Progress:
    """Block until the job has processed ``expected_lines`` and committed a checkpoint.

    Flink's record counters start at zero in a restored job, which cannot know how many lines
    its checkpoint had read: pass None to wait for the counters to stop moving instead."""
    deadline = time.monotonic() + timeout_s
    last, stable_since = None, None
    while time.monotonic() < deadline:
        state = client.job_state(job_id)
        if state in ("FAILED", "CANCELED", "FINISHED"):
            raise RuntimeError(f"job {job_id} is {state}: {client.failure(job_id)}")
        # A job that fails at every restart never reaches FAILED under an unbounded restart
        # strategy: waiting out the timeout would hide the cause for twenty minutes.
        if state == "RESTARTING" and len(client.failure_traces(job_id)) >= FAILING_IN_A_LOOP:
            raise RuntimeError(f"job {job_id} keeps failing ({FAILING_IN_A_LOOP} restarts): "
                               f"{client.failure(job_id)}")
        now = progress(client, job_id)
        if report:
            report(now)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif (expected_lines is None or now.lines_read >= expected_lines) \
                and time.monotonic() - cast(float, stable_since) >= settle_s:  # set in round 1
            _wait_for_new_checkpoint(client, job_id, deadline)
            return now
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not catch up with {expected_lines} lines in "
                       f"{timeout_s:.0f} s; last progress {last}")


def _wait_for_new_checkpoint(client, job_id: str, deadline: float) -> None:
    """Two more completed checkpoints: the second surely began after we caught up."""
    def completed() -> int:
        return client.checkpoints(job_id)["counts"]["completed"]

    target = completed() + 2
    while completed() < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: no checkpoint completed after catching up")
        time.sleep(0.5)


def latest_checkpoint_path(client, job_id: str) -> str | None:
    latest = client.checkpoints(job_id).get("latest", {}).get("completed")
    return latest["external_path"] if latest else None

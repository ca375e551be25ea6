"""A small client for Flink's REST API: submit PyFlink jobs, watch them, stop and restore them.

Only ``requests``: it works in the main env (Airflow hooks, tests, the stack) and in the Flink
env alike, against the local standalone cluster or a remote JobManager.

PyFlink jobs go through the generic jar endpoints: the flink-python jar is uploaded once (and
reused by name afterwards) and run with ``PythonDriver`` as entry class; its program arguments
are ``-py <job file>`` followed by the job's own arguments. The driver runs the job's ``main``
in the JobManager with ``python.client.executable`` from the cluster config, so the job file
must be readable there (same machine locally; baked into the image in production).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import requests

PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
# Globally terminal: the job will never run again (SUSPENDED is not; it may be recovered).
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED"})


class FlinkRestError(Exception):
    """A REST call failed. ``status`` is the HTTP status (None when Flink did not answer) and
    ``errors`` the error texts Flink returned."""

    def __init__(self, message: str, status: int | None = None,
                 errors: Sequence[str] = ()):
        super().__init__(message)
        self.status = status
        self.errors = list(errors)


class FlinkJobError(FlinkRestError):
    """A job did not reach the wanted state: it ended otherwise, or the wait timed out."""

    def __init__(self, message: str, job_id: str, state: str | None):
        super().__init__(message)
        self.job_id = job_id
        self.state = state


@dataclass(frozen=True)
class JobSummary:
    job_id: str
    name: str
    state: str
    start_time_ms: int
    end_time_ms: int  # -1 while the job runs


class FlinkRestClient:
    def __init__(self, base_url: str, timeout_s: float = 30.0,
                 python_jar: Path | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._python_jar = python_jar
        self._session = requests.Session()

    # -- plumbing -------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs) -> dict:
        url = f"{self.base_url}{path}"
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            response = self._session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise FlinkRestError(f"Flink REST at {self.base_url} is not answering "
                                 f"({method} {path}): {_reason(exc)}") from exc
        if response.status_code >= 400:
            errors = _error_texts(response)
            detail = _summarise(errors) or response.reason
            raise FlinkRestError(f"{method} {path} -> HTTP {response.status_code}: {detail}",
                                 status=response.status_code, errors=errors)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise FlinkRestError(f"{method} {path} -> HTTP {response.status_code} but the body "
                                 "is not JSON", status=response.status_code) from exc

    # -- cluster --------------------------------------------------------------------------
    def overview(self) -> dict:
        """Taskmanagers, slots (total/available), job counts and the Flink version."""
        return self._call("GET", "/overview")

    def cluster_config(self) -> dict[str, str]:
        """The JobManager's effective configuration (e.g. ``execution.checkpointing.dir``)."""
        return {entry["key"]: entry["value"]
                for entry in self._call("GET", "/jobmanager/config") or []}

    # -- jars -----------------------------------------------------------------------------
    def jars(self) -> list[dict]:
        return self._call("GET", "/jars").get("files", [])

    def upload_jar(self, path: Path) -> str:
        """Upload a jar; return its id on the cluster."""
        with open(path, "rb") as handle:
            body = self._call("POST", "/jars/upload", files={
                "jarfile": (path.name, handle, "application/x-java-archive")}, timeout=120)
        if body.get("status") != "success":
            raise FlinkRestError(f"upload of {path.name} was not accepted: {body}")
        return Path(body["filename"]).name

    def ensure_jar(self, path: Path) -> str:
        """The id of an already uploaded jar with this file name, else upload it."""
        same_name = [jar for jar in self.jars() if jar.get("name") == path.name]
        if same_name:
            return max(same_name, key=lambda jar: jar.get("uploaded", 0))["id"]
        return self.upload_jar(path)

    def python_jar_id(self) -> str:
        if self._python_jar is None:
            from mercury.ops.flink_dist import flink_python_jar

            self._python_jar = flink_python_jar()
        return self.ensure_jar(self._python_jar)

    # -- submission -----------------------------------------------------------------------
    def run_python(self, py_file: Path | str, args: Iterable[str] = (), *,
                   pyexec: str | None = None, parallelism: int | None = None,
                   savepoint_path: str | None = None,
                   allow_non_restored_state: bool = False) -> str:
        """Run a PyFlink job file; return the job id once Flink has accepted the job.

        ``pyexec`` overrides the cluster's ``python.executable`` (the TaskManager's Python UDF
        workers) for this job. With ``savepoint_path`` the job restores its state from that
        savepoint (or a retained checkpoint). The call returns after the job's ``main`` has run
        in the JobManager: a PyFlink cold start, ~10-15 s here. If ``main`` fails, the error
        carries the Python output, read back from the JobManager's log.
        """
        driver_args = ["-py", str(py_file)]
        if pyexec is not None:
            driver_args += ["-pyexec", pyexec]
        request: dict = {"entryClass": PYTHON_DRIVER,
                         "programArgsList": [*driver_args, *map(str, args)]}
        if parallelism is not None:
            request["parallelism"] = parallelism
        if savepoint_path is not None:
            request["savepointPath"] = savepoint_path
            request["allowNonRestoredState"] = allow_non_restored_state
        try:
            body = self._call("POST", f"/jars/{self.python_jar_id()}/run", json=request,
                              timeout=max(self.timeout_s, 180))
        except FlinkRestError as exc:
            if not any("Python process exits with code" in error for error in exc.errors):
                raise
            output = self._last_python_output()
            raise FlinkRestError(f"{py_file} failed in the JobManager: "
                                 f"{output or exc}", status=exc.status,
                                 errors=exc.errors) from exc
        return body["jobid"]

    def _last_python_output(self, max_lines: int = 40) -> str:
        """What the last PyFlink ``main`` printed, from the JobManager log (best effort: the
        driver logs the Python process's output between two marker lines)."""
        try:
            response = self._session.get(f"{self.base_url}/jobmanager/log", timeout=30)
            response.raise_for_status()
        except requests.RequestException:
            return ""
        lines = response.text.splitlines()
        starts = [n for n, line in enumerate(lines) if "Python Process Started" in line]
        if not starts:
            return ""
        output = []
        for line in lines[starts[-1] + 1:]:
            if "Python Process Exited" in line:
                break
            output.append(line.split("[] - ", 1)[-1])
        return "\n".join(output[-max_lines:])

    # -- jobs -----------------------------------------------------------------------------
    def jobs(self) -> list[JobSummary]:
        return [JobSummary(job["jid"], job["name"], job["state"], job.get("start-time", -1),
                           job.get("end-time", -1))
                for job in self._call("GET", "/jobs/overview").get("jobs", [])]

    def job(self, job_id: str) -> dict:
        """Flink's job details: state, per-state timestamps, vertices and their states."""
        return self._call("GET", f"/jobs/{job_id}")

    def metric_sums(self, job_id: str, suffix: str) -> dict[str, float]:
        """Each vertex's metrics whose name ends with ``suffix``, summed over its subtasks
        (e.g. a Python function's own counters), by ``<vertex name>/<metric>``."""
        sums: dict[str, float] = {}
        for vertex in self.job(job_id)["vertices"]:
            path = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
            names = [m["id"] for m in cast(list, self._call("GET", path))
                     if m["id"].endswith(suffix)]
            if names:
                for metric in cast(list, self._call("GET", path,
                                                    params={"get": ",".join(names)})):
                    sums[f"{vertex['name']}/{metric['id']}"] = float(metric["sum"])
        return sums

    def job_state(self, job_id: str) -> str:
        return self.job(job_id)["state"]

    def failure_traces(self, job_id: str) -> list[str]:
        """Every recorded exception of the job, whole (the newest first)."""
        history = self._call("GET", f"/jobs/{job_id}/exceptions").get("exceptionHistory", {})
        return [e.get("stacktrace") or e.get("exceptionName", "")
                for e in history.get("entries") or []]

    def failure(self, job_id: str) -> str | None:
        """The most recent exception of the job (first lines of its stack trace), if any."""
        history = self._call("GET", f"/jobs/{job_id}/exceptions").get("exceptionHistory", {})
        entries = history.get("entries") or []
        if not entries:
            return None
        return _summarise([entries[0].get("stacktrace") or entries[0].get("exceptionName", "")])

    def wait_for_state(self, job_id: str, states: Iterable[str], timeout_s: float = 120.0,
                       poll_s: float = 0.5) -> str:
        """Wait until the job is in one of ``states``; return that state.

        Raises FlinkJobError when the job ends in another terminal state (with its failure)
        or when ``timeout_s`` passes.
        """
        wanted = {state.upper() for state in states}
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.job_state(job_id)
            if state in wanted:
                return state
            if state in TERMINAL_STATES:
                failure = self.failure(job_id) if state == "FAILED" else None
                raise FlinkJobError(f"job {job_id} ended {state} while waiting for "
                                    f"{'/'.join(sorted(wanted))}"
                                    + (f": {failure}" if failure else ""), job_id, state)
            if time.monotonic() >= deadline:
                raise FlinkJobError(f"job {job_id} still {state} after {timeout_s:.0f}s, "
                                    f"expected {'/'.join(sorted(wanted))}", job_id, state)
            time.sleep(poll_s)

    def wait_until_running(self, job_id: str, timeout_s: float = 120.0,
                           poll_s: float = 0.5) -> None:
        """Wait until the job is RUNNING and so are all its tasks (a job turns RUNNING while
        its tasks are still being deployed); a task that finished (a bounded input) counts."""
        deadline = time.monotonic() + timeout_s
        self.wait_for_state(job_id, ["RUNNING"], timeout_s, poll_s)
        while True:
            details = self.job(job_id)
            pending = tasks_not_running(details)
            if details["state"] == "RUNNING" and not pending:
                return
            if details["state"] != "RUNNING":
                self.wait_for_state(job_id, ["RUNNING"], max(0.0, deadline - time.monotonic()))
            elif time.monotonic() >= deadline:
                raise FlinkJobError(f"job {job_id} is RUNNING but these tasks are not after "
                                    f"{timeout_s:.0f}s: {', '.join(pending)}", job_id, "RUNNING")
            time.sleep(poll_s)

    def cancel(self, job_id: str) -> None:
        """Ask Flink to cancel the job (no savepoint); returns before it is CANCELED."""
        self._call("PATCH", f"/jobs/{job_id}", params={"mode": "cancel"})

    def stop_with_savepoint(self, job_id: str, target_dir: str | None = None,
                            drain: bool = False, timeout_s: float = 120.0) -> str:
        """Take a savepoint and stop the job; return the savepoint's location.

        Without ``target_dir`` the cluster's default savepoint dir is used. ``drain`` emits
        MAX_WATERMARK first (fires all windows): use it for a final stop, not for an upgrade.
        """
        request: dict = {"drain": drain}
        if target_dir is not None:
            request["targetDirectory"] = target_dir
        trigger = self._call("POST", f"/jobs/{job_id}/stop", json=request)["request-id"]
        deadline = time.monotonic() + timeout_s
        while True:
            body = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
            if body.get("status", {}).get("id") == "COMPLETED":
                operation = body.get("operation") or {}
                if "location" in operation:
                    # The job finishes just after its savepoint: wait, so that a restore
                    # from this savepoint never overlaps the old job.
                    self.wait_for_state(job_id, ["FINISHED"],
                                        max(5.0, deadline - time.monotonic()))
                    return operation["location"]
                cause = operation.get("failure-cause") or {}
                raise FlinkJobError(f"stop-with-savepoint of job {job_id} failed: "
                                    f"{_summarise([cause.get('stack-trace', str(cause))])}",
                                    job_id, None)
            if time.monotonic() >= deadline:
                raise FlinkJobError(f"stop-with-savepoint of job {job_id} did not complete "
                                    f"within {timeout_s:.0f}s", job_id, None)
            time.sleep(0.5)

    def checkpoints(self, job_id: str) -> dict:
        """Flink's checkpoint statistics: counts, history and ``latest`` (completed,
        savepoint, failed, and ``restored``: what the job started from)."""
        return self._call("GET", f"/jobs/{job_id}/checkpoints")

    def latest_checkpoint(self, job_id: str) -> dict | None:
        """The latest completed checkpoint (id, latest_ack_timestamp, external_path ...)."""
        return (self.checkpoints(job_id).get("latest") or {}).get("completed")

    def checkpoint_age_s(self, job_id: str, now_ms: int) -> float | None:
        """Seconds between ``now_ms`` and the latest completed checkpoint; None if none yet."""
        completed = self.latest_checkpoint(job_id)
        if not completed:
            return None
        return (now_ms - completed["latest_ack_timestamp"]) / 1000.0


def _reason(exc: requests.RequestException) -> str:
    """'Connection refused' rather than urllib3's three nested reprs."""
    inner = exc.args[0] if exc.args else exc
    text = str(getattr(inner, "reason", inner))
    return text.rsplit("] ", 1)[-1] if "[Errno" in text else text


def _error_texts(response: requests.Response) -> list[str]:
    try:
        errors = response.json().get("errors", [])
    except ValueError:
        return [response.text] if response.text else []
    return [str(error) for error in errors]


def tasks_not_running(details: dict) -> list[str]:
    """Tasks of a job (from ``FlinkRestClient.job``) neither running nor finished, as
    ``name STATUS``; a finished task (a bounded input) counts as fine."""
    return [f"{vertex['name']} {vertex.get('status')}" for vertex in details.get("vertices", [])
            if vertex.get("status") not in ("RUNNING", "FINISHED")]


def _summarise(errors: Sequence[str], max_lines: int = 12) -> str:
    """The informative part of Flink's errors: exception lines and Python tracebacks, no Java
    frames ("at org.apache...")."""
    lines = []
    for error in errors:
        for line in error.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("at ") and not stripped.startswith("..."):
                lines.append(stripped)
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more lines)"]
    return " | ".join(lines)

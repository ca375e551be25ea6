"""Deploying long-running Flink jobs so that their state survives every stop and upgrade.

A streaming job's state (dedup keys, feature tiles) is the truth the online store is rebuilt
from, so a new deployment must start from the last state of the previous one, never from
scratch by accident. Each job name has a small deployment record,
``<data_dir>/flink/deployments/<job-name>.json``: the running job's id and arguments, what it
restored from, and the last savepoint and checkpoint seen. The restore point of a deploy is,
in order:

1. the savepoint the previous job was stopped with (``stop``);
2. else the previous job's newest retained checkpoint (or savepoint): asked from the REST API,
   or, when the cluster no longer knows the job (it was restarted), found in the cluster's
   checkpoint folder (``execution.checkpointing.dir``, local disk only);
3. else what the previous job itself restored from (it failed before its first checkpoint).

Flink keeps checkpoints of cancelled and failed jobs because the cluster retains them
(``externalized-checkpoint-retention: RETAIN_ON_CANCELLATION``, infra/local/flink/config.yaml).

The Flink job name is the deployment name (``--job-name`` is passed to the job): that is how a
retried deploy finds the job it already submitted, and how ``health`` finds the job. No clock
is read here: record times are Flink's own, and ``health`` takes ``now_ms``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from mercury.config import Settings
from mercury.ops.flink_rest import (
    TERMINAL_STATES,
    FlinkRestClient,
    FlinkRestError,
    JobSummary,
    tasks_not_running,
)

_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DeploymentError(Exception):
    """A deployment cannot go ahead as asked; the message says what to do instead."""


@dataclass(frozen=True)
class Deployment:
    """The record of one job name's current deployment."""

    job_name: str
    job_id: str
    py_file: str
    args: tuple[str, ...]
    deployed_at_ms: int                    # the job's start time, as Flink reports it
    restored_from: str | None = None       # savepoint/checkpoint path the job started from
    last_savepoint: str | None = None
    last_savepoint_job_id: str | None = None  # the job that savepoint was taken from
    # The previous job's newest retained checkpoint when this one was deployed (None when it
    # stopped with a savepoint: stopping discards the checkpoints the savepoint subsumes).
    last_checkpoint: str | None = None
    stopped_at_ms: int | None = None


@dataclass(frozen=True)
class HealthReport:
    job_name: str
    job_id: str
    state: str
    tasks_not_running: tuple[str, ...]
    checkpoint_age_s: float | None         # None: no checkpoint completed yet
    last_checkpoint: str | None
    restored_from: str | None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        age = "none yet" if self.checkpoint_age_s is None else f"{self.checkpoint_age_s:.1f}s"
        return (f"{self.job_name} ({self.job_id}) {self.state}; last checkpoint {age}; "
                f"restored from {self.restored_from or 'nothing'}"
                + (f"; PROBLEMS: {'; '.join(self.problems)}" if self.problems else ""))


class UnhealthyJob(Exception):
    """The job is not healthy; ``report`` says why (None when no such job exists)."""

    def __init__(self, message: str, report: HealthReport | None = None):
        super().__init__(message)
        self.report = report


# -- the record --------------------------------------------------------------------------------
def record_path(settings: Settings, job_name: str) -> Path:
    if not _JOB_NAME.match(job_name):
        raise DeploymentError(f"job name {job_name!r} may use only letters, digits, '_', '.' "
                              "and '-'")
    return settings.data_dir / "flink" / "deployments" / f"{job_name}.json"


def load(settings: Settings, job_name: str) -> Deployment | None:
    path = record_path(settings, job_name)
    if not path.is_file():
        return None
    raw = orjson.loads(path.read_bytes())
    return Deployment(**{**raw, "args": tuple(raw["args"])})


def save(settings: Settings, record: Deployment) -> Path:
    """Write the record atomically (hidden file, then rename)."""
    path = record_path(settings, record.job_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden = path.with_name(f".{path.name}.tmp")
    hidden.write_bytes(orjson.dumps(dataclasses.asdict(record), option=orjson.OPT_INDENT_2))
    os.replace(hidden, path)
    return path


# -- deploy and stop ---------------------------------------------------------------------------
def deploy(client: FlinkRestClient, settings: Settings, job_name: str, py_file: Path | str,
           args: list[str] | tuple[str, ...] = (), restore: bool = True, *,
           allow_non_restored_state: bool = False) -> Deployment:
    """Submit the job (restoring the previous deployment's state unless ``restore`` is False);
    return its new record. Returns before the job runs: follow with ``wait_until_running``.

    Safe to retry: if a job of this name is already live with the same arguments it is kept
    (and recorded, if a crashed deploy never wrote its record). With other arguments it is an
    error: ``stop`` first (a redeploy), so the new job restores from a savepoint.
    ``allow_non_restored_state`` lets a job that dropped operators (e.g. a feature set) start
    from a savepoint that still holds their state.
    """
    args = tuple(str(arg) for arg in args)
    if "--job-name" not in args:
        args += ("--job-name", job_name)
    previous = load(settings, job_name)
    live = _live_job(client, job_name)
    if live is not None:
        return _keep_live(client, settings, previous, live, job_name, str(py_file), args)

    restore_from = last_checkpoint = None
    if restore and previous is not None:
        kept = retained_snapshots(client, previous.job_id)
        last_checkpoint = next((s.path for s in kept if not s.savepoint), None)
        restore_from = restore_point(previous, kept[0].path if kept else None)
    job_id = client.run_python(py_file, args, savepoint_path=restore_from,
                               allow_non_restored_state=allow_non_restored_state)
    record = Deployment(
        job_name=job_name, job_id=job_id, py_file=str(py_file), args=args,
        deployed_at_ms=client.job(job_id)["start-time"], restored_from=restore_from,
        last_savepoint=previous.last_savepoint if previous else None,
        last_savepoint_job_id=previous.last_savepoint_job_id if previous else None,
        last_checkpoint=last_checkpoint)
    save(settings, record)
    return record


def stop(client: FlinkRestClient, settings: Settings, job_name: str) -> Deployment:
    """Stop the deployed job with a savepoint (no drain: this is for upgrades) and record the
    savepoint, which the next ``deploy`` restores from. A job that is not running any more is
    left as it is and its record returned unchanged: stopped already (a retried stop), or
    ended otherwise, and then the next deploy restores from its retained checkpoints. Tell
    them apart with ``last_savepoint_job_id == job_id``."""
    record = load(settings, job_name)
    if record is None:
        raise DeploymentError(f"no deployment of {job_name!r} is recorded "
                              f"(looked for {record_path(settings, job_name)})")
    if record.last_savepoint_job_id == record.job_id:
        return record
    state = _state_or_none(client, record.job_id)
    if state is None or state in TERMINAL_STATES:
        return record  # no savepoint taken: the next deploy uses its retained checkpoints
    savepoint = client.stop_with_savepoint(record.job_id)
    record = dataclasses.replace(
        record, last_savepoint=savepoint, last_savepoint_job_id=record.job_id,
        stopped_at_ms=client.job(record.job_id)["end-time"])
    save(settings, record)
    return record


def restore_point(previous: Deployment, newest_snapshot: str | None) -> str | None:
    """Where the next job starts from (see the module doc): the savepoint the previous job
    was stopped with, else its newest retained snapshot, else what it restored from."""
    if previous.last_savepoint and previous.last_savepoint_job_id == previous.job_id:
        return previous.last_savepoint
    return newest_snapshot or previous.restored_from


@dataclass(frozen=True)
class Snapshot:
    id: int
    path: str
    savepoint: bool


def retained_snapshots(client: FlinkRestClient, job_id: str) -> list[Snapshot]:
    """The job's latest completed checkpoint and savepoint that still exist, newest first."""
    try:
        latest = client.checkpoints(job_id).get("latest") or {}
    except FlinkRestError as exc:
        if exc.status != 404:
            raise
        return checkpoints_on_disk(client.cluster_config(), job_id)[:1]
    kept = [Snapshot(s["id"], s["external_path"], bool(s.get("is_savepoint")))
            for s in (latest.get("completed"), latest.get("savepoint"))
            if s and s.get("external_path") and not s.get("discarded")]
    return sorted(kept, key=lambda snapshot: -snapshot.id)


def checkpoints_on_disk(cluster_config: dict[str, str], job_id: str) -> list[Snapshot]:
    """Complete checkpoints ``<checkpoint dir>/<job id>/chk-N`` on a local disk, newest
    first, for a job the cluster forgot (restarted since). Empty for remote storage."""
    base = cluster_config.get("execution.checkpointing.dir", "")
    if not base.startswith("file:"):
        return []
    folder = Path(re.sub(r"^file:(//)?", "", base)) / job_id
    done = [Snapshot(int(path.name[4:]), f"file:{path}", False) for path in folder.glob("chk-*")
            if path.name[4:].isdigit() and (path / "_metadata").is_file()]
    return sorted(done, key=lambda snapshot: -snapshot.id)


def _live_job(client: FlinkRestClient, job_name: str) -> JobSummary | None:
    live = [job for job in client.jobs()
            if job.name == job_name and job.state not in TERMINAL_STATES]
    if len(live) > 1:
        raise DeploymentError(f"{len(live)} jobs named {job_name!r} are live "
                              f"({', '.join(job.job_id for job in live)}): cancel all but one")
    return live[0] if live else None


def _keep_live(client, settings, previous, live, job_name, py_file, args) -> Deployment:
    if previous is not None and previous.job_id == live.job_id:
        if previous.args != args:
            raise DeploymentError(
                f"{job_name} ({live.job_id}) is {live.state} with other arguments "
                f"{list(previous.args)}: stop it first (action redeploy) to change them")
        return previous
    # A live job nobody recorded: a deploy that died between submit and save. Adopt it.
    restored = ((client.checkpoints(live.job_id).get("latest") or {}).get("restored") or {})
    record = Deployment(job_name=job_name, job_id=live.job_id, py_file=py_file, args=args,
                        deployed_at_ms=live.start_time_ms,
                        restored_from=restored.get("external_path"),
                        last_savepoint=previous.last_savepoint if previous else None,
                        last_savepoint_job_id=previous.last_savepoint_job_id if previous else None)
    save(settings, record)
    return record


def _state_or_none(client: FlinkRestClient, job_id: str) -> str | None:
    try:
        return client.job_state(job_id)
    except FlinkRestError as exc:
        if exc.status == 404:
            return None
        raise


# -- health ------------------------------------------------------------------------------------
def health(client: FlinkRestClient, job_name: str, max_checkpoint_age_s: float,
           now_ms: int) -> HealthReport:
    """The newest job of this name (a live one first), checked at ``now_ms``: it must be
    RUNNING with all its tasks, and have completed a checkpoint within
    ``max_checkpoint_age_s`` (or have started less than that ago). Raises UnhealthyJob naming
    every problem; returns the report otherwise."""
    jobs = [job for job in client.jobs() if job.name == job_name]
    if not jobs:
        raise UnhealthyJob(f"no Flink job named {job_name!r} on the cluster")
    job = max(jobs, key=lambda j: (j.state not in TERMINAL_STATES, j.start_time_ms))
    report = assess(job_name, client.job(job.job_id), client.checkpoints(job.job_id),
                    max_checkpoint_age_s, now_ms)
    if not report.ok:
        raise UnhealthyJob(f"Flink job {job_name} ({job.job_id}) is unhealthy: "
                           f"{'; '.join(report.problems)}", report)
    return report


def assess(job_name: str, details: dict, checkpoints: dict, max_checkpoint_age_s: float,
           now_ms: int) -> HealthReport:
    """The health of one job from its REST details and checkpoint statistics (pure)."""
    state = details["state"]
    latest = checkpoints.get("latest") or {}
    completed = latest.get("completed")
    age = (now_ms - completed["latest_ack_timestamp"]) / 1000 if completed else None
    pending = tuple(tasks_not_running(details))
    problems = []
    if state != "RUNNING":
        problems.append(f"job is {state}, not RUNNING")
    if pending:
        problems.append(f"tasks not running: {', '.join(pending)}")
    if state == "RUNNING":
        if age is not None and age > max_checkpoint_age_s:
            problems.append(f"last checkpoint completed {age:.0f}s ago (limit "
                            f"{max_checkpoint_age_s:.0f}s)")
        running_s = (now_ms - details["start-time"]) / 1000
        if age is None and running_s > max_checkpoint_age_s:
            problems.append(f"no checkpoint completed in the {running_s:.0f}s since the job "
                            f"started (limit {max_checkpoint_age_s:.0f}s)")
    return HealthReport(
        job_name=job_name, job_id=details["jid"], state=state, tasks_not_running=pending,
        checkpoint_age_s=age, last_checkpoint=completed.get("external_path") if completed
        else None, restored_from=(latest.get("restored") or {}).get("external_path"),
        problems=tuple(problems))

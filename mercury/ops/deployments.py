"""Deploying long-running Flink jobs so that their state survives every stop and upgrade.

A streaming job's state (dedup keys, feature tiles) is the truth the online store is rebuilt
from, so a new deployment must start from the last state of the previous one, never from
scratch by accident. Each job name has a deployment record, one row of the shared
operational store (``mercury.ops.state``: Postgres, table ``<ops schema>.flink_deployments``)
so that a retry on another Airflow worker sees it: the running job's id and arguments, what
it restored from, and the last savepoint and checkpoint seen. ``deploy`` and ``stop`` hold
the job name's lock while they work, so two workers deploying at once make one deployment:
the second waits, then finds the first's job live and keeps it. The restore point of a
deploy is, in order:

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
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from mercury.config import Settings
from mercury.ops import state
from mercury.ops.flink_rest import (
    TERMINAL_STATES,
    FlinkRestClient,
    FlinkRestError,
    JobSummary,
    tasks_not_running,
)

if TYPE_CHECKING:
    from psycopg import Connection

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
_TABLE = "flink_deployments"
_FIELDS = tuple(field.name for field in dataclasses.fields(Deployment))


def check_job_name(job_name: str) -> str:
    if not _JOB_NAME.match(job_name):
        raise DeploymentError(f"job name {job_name!r} may use only letters, digits, '_', '.' "
                              "and '-'")
    return job_name


def load(settings: Settings, job_name: str) -> Deployment | None:
    """The job's record as every worker sees it; None if it was never deployed."""
    with state.connect(settings) as conn:
        return _read(conn, settings, check_job_name(job_name))


def save(settings: Settings, record: Deployment) -> None:
    """Write the record, holding the job's lock (``deploy`` and ``stop`` write their own)."""
    with _exclusive(settings, record.job_name) as conn:
        _write(conn, settings, record)


@contextmanager
def _exclusive(settings: Settings, job_name: str) -> Iterator[Connection]:
    """A connection holding the job name's lock: one deploy or stop of a job at a time,
    whichever worker runs it."""
    check_job_name(job_name)
    with state.connect(settings) as conn, state.held(conn, settings, "deployment", job_name):
        yield conn


def _read(conn: Connection, settings: Settings, job_name: str) -> Deployment | None:
    return _select(conn, settings, job_name) or _import_file_record(conn, settings, job_name)


def _select(conn: Connection, settings: Settings, job_name: str) -> Deployment | None:
    from psycopg import sql
    from psycopg.rows import dict_row

    query = sql.SQL("SELECT {} FROM {} WHERE job_name = %s").format(
        sql.SQL(", ").join(map(sql.Identifier, _FIELDS)), state.table(settings, _TABLE))
    row = conn.cursor(row_factory=dict_row).execute(query, (job_name,)).fetchone()
    return None if row is None else Deployment(**{**row, "args": tuple(row["args"])})


def _write(conn: Connection, settings: Settings, record: Deployment, *,
           replace: bool = True) -> None:
    from psycopg import sql

    on_conflict = "DO UPDATE SET ({columns}, updated_at) = ({excluded}, now())" if replace \
        else "DO NOTHING"
    values = {**dataclasses.asdict(record), "args": list(record.args)}
    conn.execute(sql.SQL(
        "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT (job_name) "
        + on_conflict).format(
            table=state.table(settings, _TABLE),
            columns=sql.SQL(", ").join(map(sql.Identifier, _FIELDS)),
            values=sql.SQL(", ").join(map(sql.Placeholder, _FIELDS)),
            excluded=sql.SQL(", ").join(sql.Identifier("excluded", f) for f in _FIELDS)),
        values)


def _import_file_record(conn: Connection, settings: Settings, job_name: str
                        ) -> Deployment | None:
    """A record an earlier release kept on a worker's disk (``<data_dir>/flink/deployments``),
    moved into the store once unless the store has one already; the file is renamed
    ``.imported``. Remove once no worker has such files."""
    path = settings.data_dir / "flink" / "deployments" / f"{job_name}.json"
    if not path.is_file():
        return None
    raw = orjson.loads(path.read_bytes())
    _write(conn, settings, Deployment(**{**raw, "args": tuple(raw["args"])}), replace=False)
    path.rename(path.with_name(f"{path.name}.imported"))
    return _select(conn, settings, job_name)


# -- deploy and stop ---------------------------------------------------------------------------
def deploy(client: FlinkRestClient, settings: Settings, job_name: str, py_file: Path | str,
           args: list[str] | tuple[str, ...] = (), restore: bool = True, *,
           allow_non_restored_state: bool = False) -> Deployment:
    """Submit the job (restoring the previous deployment's state unless ``restore`` is False);
    return its new record. Returns before the job runs: follow with ``wait_until_running``.

    Safe to retry, and to run on two workers at once (the second waits for the first): if a
    job of this name is already live with the same arguments it is kept (and recorded, if a
    crashed deploy never wrote its record). With other arguments it is an error: ``stop``
    first (a redeploy), so the new job restores from a savepoint.
    ``allow_non_restored_state`` lets a job that dropped operators (e.g. a feature set) start
    from a savepoint that still holds their state.
    """
    args = tuple(str(arg) for arg in args)
    if "--job-name" not in args:
        args += ("--job-name", job_name)
    with _exclusive(settings, job_name) as conn:
        previous = _read(conn, settings, job_name)
        live = _live_job(client, job_name)
        if live is not None:
            record = _keep_live(client, previous, live, job_name, str(py_file), args)
        else:
            record = _submit(client, previous, job_name, str(py_file), args, restore,
                             allow_non_restored_state)
        if record != previous:
            _write(conn, settings, record)
    return record


def _submit(client: FlinkRestClient, previous: Deployment | None, job_name: str, py_file: str,
            args: tuple[str, ...], restore: bool, allow_non_restored_state: bool) -> Deployment:
    restore_from = last_checkpoint = None
    if restore and previous is not None:
        kept = retained_snapshots(client, previous.job_id)
        last_checkpoint = next((s.path for s in kept if not s.savepoint), None)
        restore_from = restore_point(previous, kept[0].path if kept else None)
    job_id = client.run_python(py_file, args, savepoint_path=restore_from,
                               allow_non_restored_state=allow_non_restored_state)
    return Deployment(
        job_name=job_name, job_id=job_id, py_file=py_file, args=args,
        deployed_at_ms=client.job(job_id)["start-time"], restored_from=restore_from,
        last_savepoint=previous.last_savepoint if previous else None,
        last_savepoint_job_id=previous.last_savepoint_job_id if previous else None,
        last_checkpoint=last_checkpoint)


def stop(client: FlinkRestClient, settings: Settings, job_name: str) -> Deployment:
    """Stop the deployed job with a savepoint (no drain: this is for upgrades) and record the
    savepoint, which the next ``deploy`` restores from. A job that is not running any more is
    left as it is and its record returned unchanged: stopped already (a retried stop), or
    ended otherwise, and then the next deploy restores from its retained checkpoints. Tell
    them apart with ``last_savepoint_job_id == job_id``."""
    with _exclusive(settings, job_name) as conn:
        record = _read(conn, settings, job_name)
        if record is None:
            raise DeploymentError(f"no deployment of {job_name!r} is recorded (in "
                                  f"{settings.ops_state.schema_name}.{_TABLE})")
        if record.last_savepoint_job_id == record.job_id:
            return record
        state_now = _state_or_none(client, record.job_id)
        if state_now is None or state_now in TERMINAL_STATES:
            return record  # no savepoint taken: the next deploy uses its retained checkpoints
        savepoint = client.stop_with_savepoint(record.job_id)
        record = dataclasses.replace(
            record, last_savepoint=savepoint, last_savepoint_job_id=record.job_id,
            stopped_at_ms=client.job(record.job_id)["end-time"])
        _write(conn, settings, record)
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


def _keep_live(client: FlinkRestClient, previous: Deployment | None, live: JobSummary,
               job_name: str, py_file: str, args: tuple[str, ...]) -> Deployment:
    if previous is not None and previous.job_id == live.job_id:
        if previous.args != args:
            raise DeploymentError(
                f"{job_name} ({live.job_id}) is {live.state} with other arguments "
                f"{list(previous.args)}: stop it first (action redeploy) to change them")
        return previous
    # A live job nobody recorded: a deploy that died between submit and save. Adopt it.
    restored = ((client.checkpoints(live.job_id).get("latest") or {}).get("restored") or {})
    return Deployment(job_name=job_name, job_id=live.job_id, py_file=py_file, args=args,
                      deployed_at_ms=live.start_time_ms,
                      restored_from=restored.get("external_path"),
                      last_savepoint=previous.last_savepoint if previous else None,
                      last_savepoint_job_id=previous.last_savepoint_job_id if previous else None)


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

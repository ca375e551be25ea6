"""Deploying streaming jobs: the records in the shared store (the real local Postgres), two
workers deploying at once, the restore choice and health rules on literal REST answers, then
the whole life of a deployment on the real local cluster with the smoke job as stand-in."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from mercury.config import REPO_ROOT, load_settings
from mercury.ops import deployments, state
from mercury.ops.deployments import Deployment, DeploymentError, UnhealthyJob
from mercury.ops.flink_rest import FlinkRestError, JobSummary
from tests.conftest import write_config

SMOKE_JOB = REPO_ROOT / "flink_jobs" / "smoke.py"
NOW = 1_800_000_000_000


def _record(**overrides) -> Deployment:
    values = {"job_name": "features", "job_id": "j2", "py_file": "job.py",
              "args": ("--job-name", "features"), "deployed_at_ms": NOW - 60_000}
    return Deployment(**{**values, **overrides})


def _details(state="RUNNING", statuses=("RUNNING", "RUNNING"), started=NOW - 60_000) -> dict:
    return {"jid": "j2", "state": state, "start-time": started,
            "vertices": [{"name": f"op{n}", "status": s} for n, s in enumerate(statuses)]}


def _checkpoints(acked_ms=None, restored=None) -> dict:
    completed = None if acked_ms is None else {
        "id": 7, "latest_ack_timestamp": acked_ms, "external_path": "file:/c/j2/chk-7"}
    return {"latest": {"completed": completed, "savepoint": None,
                       "restored": {"external_path": restored} if restored else None}}


# -- the record and the restore point -----------------------------------------------------------
def test_record_round_trips_and_rejects_path_like_names(tmp_settings):
    record = _record(restored_from="file:/s/savepoint-1")
    deployments.save(tmp_settings, record)
    assert deployments.load(tmp_settings, "features") == record
    assert deployments.load(tmp_settings, "other") is None
    changed = _record(job_id="j3", args=("--a", "1"), last_savepoint="file:/s/sp-3",
                      last_savepoint_job_id="j2", stopped_at_ms=NOW)
    deployments.save(tmp_settings, changed)
    assert deployments.load(tmp_settings, "features") == changed
    with pytest.raises(DeploymentError, match="may use only"):
        deployments.load(tmp_settings, "../escape")


def test_a_record_left_on_disk_by_an_earlier_release_is_imported_once(tmp_settings):
    """Catches an upgrade deploying from scratch: the record a worker kept on its disk
    before the shared store is moved into it, and never overwrites a newer stored one."""
    folder = tmp_settings.data_dir / "flink" / "deployments"
    folder.mkdir(parents=True)
    on_disk = _record(last_savepoint="file:/s/sp-1", last_savepoint_job_id="j2")
    (folder / "features.json").write_bytes(orjson.dumps({**on_disk.__dict__}))
    assert deployments.load(tmp_settings, "features") == on_disk
    assert not (folder / "features.json").exists()
    assert (folder / "features.json.imported").is_file()
    # Another worker still holding an old file for a job the store knows: the store wins.
    newer = _record(job_id="j9", restored_from="file:/s/sp-1")
    deployments.save(tmp_settings, newer)
    (folder / "features.json").write_bytes(orjson.dumps({**on_disk.__dict__}))
    assert deployments.load(tmp_settings, "features") == newer


def test_cli_prints_the_record_every_worker_sees(tmp_settings, capsys):
    from mercury.cli import main

    record = _record(last_savepoint="file:/s/sp-2", last_savepoint_job_id="j2")
    deployments.save(tmp_settings, record)
    assert main(["flink", "deployment", "features"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert (shown["job_id"], shown["last_savepoint"], shown["args"]) == (
        "j2", "file:/s/sp-2", ["--job-name", "features"])
    assert main(["flink", "deployment", "nothing-here"]) == 1
    assert "no deployment of 'nothing-here' is recorded" in capsys.readouterr().err


def test_restore_point_prefers_the_stop_savepoint_then_checkpoint_then_last_restore():
    stopped = _record(last_savepoint="file:/s/sp-2", last_savepoint_job_id="j2")
    assert deployments.restore_point(stopped, "file:/c/j2/chk-9") == "file:/s/sp-2"
    # A savepoint of an older job is stale once a newer job ran after it.
    stale = _record(last_savepoint="file:/s/sp-1", last_savepoint_job_id="j1",
                    restored_from="file:/s/sp-1")
    assert deployments.restore_point(stale, "file:/c/j2/chk-9") == "file:/c/j2/chk-9"
    # The job failed before its first checkpoint: its own starting point is still the newest.
    assert deployments.restore_point(stale, None) == "file:/s/sp-1"
    assert deployments.restore_point(_record(), None) is None


class _FakeClient:
    """Answers the two calls ``retained_snapshots`` makes."""

    def __init__(self, latest=None, config=None):
        self.latest, self.config = latest, config or {}

    def checkpoints(self, job_id):
        if self.latest is None:
            raise FlinkRestError(f"job {job_id} not found", status=404)
        return {"latest": self.latest}

    def cluster_config(self):
        return self.config


def _paths(client, job_id="j") -> list[str]:
    return [snapshot.path for snapshot in deployments.retained_snapshots(client, job_id)]


def test_retained_snapshots_skip_discarded_ones_newest_first(tmp_path):
    latest = {"completed": {"id": 4, "external_path": "file:/c/j/chk-4", "discarded": True},
              "savepoint": {"id": 5, "external_path": "file:/s/sp-5", "is_savepoint": True}}
    assert _paths(_FakeClient(latest)) == ["file:/s/sp-5"]
    latest["completed"] = {"id": 6, "external_path": "file:/c/j/chk-6", "discarded": False}
    assert _paths(_FakeClient(latest)) == ["file:/c/j/chk-6", "file:/s/sp-5"]

    # A restarted cluster forgot the job: its checkpoint folder on disk still has them.
    for n, complete in ((3, True), (12, True), (13, False)):
        folder = tmp_path / "j" / f"chk-{n}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "_metadata").write_bytes(b"x")
    forgot = _FakeClient(config={"execution.checkpointing.dir": f"file://{tmp_path}"})
    assert _paths(forgot) == [f"file:{tmp_path}/j/chk-12"]
    assert _paths(forgot, "other") == []
    remote = _FakeClient(config={"execution.checkpointing.dir": "s3://bucket/checkpoints"})
    assert _paths(remote) == []


# -- two workers at once ------------------------------------------------------------------------
class _FakeFlink:
    """A stand-in for the Flink REST client (a cluster of our own would take a slot and 15 s
    a submit): it keeps jobs by name like the JobManager, and a submit takes ``submit_s``
    before the job is listed, as ``bin/flink run`` does. Thread-safe."""

    def __init__(self, previous: Deployment, submit_s: float = 0.5):
        self.submit_s = submit_s
        self.submits: list[str | None] = []          # the savepoint each submit restored
        self.submitting = threading.Event()
        self._jobs = {previous.job_id: JobSummary(previous.job_id, previous.job_name,
                                                  "FINISHED", NOW - 90_000, NOW - 60_000)}
        self._savepoint = {"id": 3, "external_path": previous.last_savepoint,
                           "is_savepoint": True}
        self._lock = threading.Lock()

    def jobs(self):
        with self._lock:
            return list(self._jobs.values())

    def job(self, job_id):
        return {"jid": job_id, "start-time": self._jobs[job_id].start_time_ms}

    def checkpoints(self, job_id):
        return {"latest": {"completed": None, "savepoint": self._savepoint, "restored": None}}

    def run_python(self, py_file, args, *, savepoint_path=None, allow_non_restored_state=False):
        self.submitting.set()
        time.sleep(self.submit_s)
        with self._lock:
            self.submits.append(savepoint_path)
            job_id = f"job-{len(self.submits)}"
            name = args[args.index("--job-name") + 1]
            self._jobs[job_id] = JobSummary(job_id, name, "RUNNING", NOW + len(self.submits), -1)
        return job_id


def test_two_workers_deploying_at_once_make_one_deploy_from_the_shared_savepoint(tmp_settings):
    """Two Airflow workers (threads here, each with its own Postgres connection, as two
    workers have) run the same deploy task at once, after a stop recorded a savepoint in the
    shared store. Catches a record on a worker's disk (the second worker would find none and
    deploy from empty state) and an unlocked deploy (both would submit: two jobs)."""
    stopped = _record(job_name="online-features", job_id="j-old",
                      last_savepoint="file:/s/sp-1", last_savepoint_job_id="j-old",
                      stopped_at_ms=NOW - 60_000)
    deployments.save(tmp_settings, stopped)
    flink = _FakeFlink(stopped)
    results: dict[str, Deployment] = {}

    def worker(name: str) -> None:
        results[name] = deployments.deploy(flink, tmp_settings, "online-features", "job.py",
                                           ["--engine", "sql"])

    first = threading.Thread(target=worker, args=("first",))
    first.start()
    assert flink.submitting.wait(10)       # the first worker is mid-submit, holding the lock
    second = threading.Thread(target=worker, args=("second",))
    second.start()
    first.join(20)
    second.join(20)

    assert flink.submits == ["file:/s/sp-1"]   # one deploy, restored from the savepoint
    assert results["first"] == results["second"]
    assert results["second"].job_id == "job-1"
    assert deployments.load(tmp_settings, "online-features") == results["first"]
    assert results["first"].restored_from == "file:/s/sp-1"
    assert results["first"].last_savepoint_job_id == "j-old"


def test_a_deploy_waits_for_the_lock_no_longer_than_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("MERCURY_CONFIG",
                       str(write_config(tmp_path, ops_state={"lock_wait_s": 0.3})))
    settings = load_settings()
    flink = _FakeFlink(_record(last_savepoint="file:/s/sp", last_savepoint_job_id="j2"))
    with state.connect(settings) as other, state.held(other, settings, "deployment",
                                                      "features"):
        started = time.monotonic()
        with pytest.raises(state.LockWaitTimeout,
                           match=r"deployment lock of 'features' for over 0.3s"):
            deployments.deploy(flink, settings, "features", "job.py")
        assert 0.25 < time.monotonic() - started < 5
    assert flink.submits == []


# -- health rules --------------------------------------------------------------------------------
def test_assess_healthy_job_reports_age_and_restore():
    report = deployments.assess("features", _details(), _checkpoints(NOW - 4_000, "file:/s/sp"),
                                max_checkpoint_age_s=60, now_ms=NOW)
    assert report.ok, report.problems
    assert (report.state, report.tasks_not_running) == ("RUNNING", ())
    assert report.checkpoint_age_s == 4.0
    assert report.last_checkpoint == "file:/c/j2/chk-7"
    assert report.restored_from == "file:/s/sp"


def test_assess_names_each_problem():
    old = deployments.assess("f", _details(), _checkpoints(NOW - 600_000), 60, NOW)
    assert old.problems == ("last checkpoint completed 600s ago (limit 60s)",)
    never = deployments.assess("f", _details(started=NOW - 300_000), _checkpoints(), 60, NOW)
    assert never.problems == ("no checkpoint completed in the 300s since the job started "
                              "(limit 60s)",)
    young = deployments.assess("f", _details(started=NOW - 5_000), _checkpoints(), 60, NOW)
    assert young.ok and young.checkpoint_age_s is None
    deploying = deployments.assess("f", _details(statuses=("RUNNING", "DEPLOYING")),
                                   _checkpoints(NOW - 1_000), 60, NOW)
    assert deploying.problems == ("tasks not running: op1 DEPLOYING",)
    failed = deployments.assess("f", _details("FAILED", ("FAILED", "CANCELED")),
                                _checkpoints(NOW - 1_000), 60, NOW)
    assert failed.problems[0] == "job is FAILED, not RUNNING"


# -- on the real cluster -------------------------------------------------------------------------
def _wait_for_checkpoint(client, job_id: str, timeout_s: float = 40) -> dict:
    deadline = time.monotonic() + timeout_s
    while (checkpoint := client.latest_checkpoint(job_id)) is None:
        assert time.monotonic() < deadline, f"job {job_id} completed no checkpoint"
        time.sleep(0.5)
    return checkpoint


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.stack
@pytest.mark.slow
def test_deploy_stop_restore_health_cancel(flink_rest, tmp_settings, tmp_path):
    """deploy -> running -> checkpoints -> stop with savepoint -> deploy restores from it ->
    health -> cancel -> unhealthy -> deploy restores from the retained checkpoint."""
    _require_a_free_slot(flink_rest)
    events = tmp_path / "events"
    events.mkdir()
    name = f"test-deploy-{uuid.uuid4().hex[:8]}"
    args = ["--events", str(events)]
    started: list[str] = []

    def deploy() -> Deployment:
        record = deployments.deploy(flink_rest, tmp_settings, name, SMOKE_JOB, args)
        started.append(record.job_id)
        flink_rest.wait_until_running(record.job_id, timeout_s=90)
        return record

    try:
        first = deploy()
        assert first.restored_from is None and first.args[-2:] == ("--job-name", name)
        assert flink_rest.job(first.job_id)["name"] == name
        _wait_for_checkpoint(flink_rest, first.job_id)

        stopped = deployments.stop(flink_rest, tmp_settings, name)
        assert flink_rest.job_state(first.job_id) == "FINISHED"
        assert stopped.last_savepoint.startswith("file:")
        assert stopped.last_savepoint_job_id == first.job_id
        assert deployments.load(tmp_settings, name) == stopped
        assert deployments.stop(flink_rest, tmp_settings, name) == stopped  # a retried stop

        second = deploy()
        assert second.restored_from == stopped.last_savepoint
        assert second.last_checkpoint is None  # the stop discarded the subsumed checkpoints
        restored = flink_rest.checkpoints(second.job_id)["latest"]["restored"]
        assert restored["external_path"] == stopped.last_savepoint
        # A retried deploy keeps the live job; other arguments need a redeploy.
        assert deployments.deploy(flink_rest, tmp_settings, name, SMOKE_JOB, args) == second
        with pytest.raises(DeploymentError, match="redeploy"):
            deployments.deploy(flink_rest, tmp_settings, name, SMOKE_JOB, [*args, "--x"])

        checkpoint = _wait_for_checkpoint(flink_rest, second.job_id)
        report = deployments.health(flink_rest, name, max_checkpoint_age_s=60, now_ms=_now_ms())
        assert (report.job_id, report.state, report.tasks_not_running) == (
            second.job_id, "RUNNING", ())
        assert 0 <= report.checkpoint_age_s < 60
        assert report.restored_from == stopped.last_savepoint
        with pytest.raises(UnhealthyJob, match=r"last checkpoint completed \d+s ago"):
            deployments.health(flink_rest, name, 60, now_ms=_now_ms() + 3_600_000)

        flink_rest.cancel(second.job_id)
        flink_rest.wait_for_state(second.job_id, ["CANCELED"], timeout_s=30)
        with pytest.raises(UnhealthyJob, match="job is CANCELED, not RUNNING") as unhealthy:
            deployments.health(flink_rest, name, 60, now_ms=_now_ms())
        assert unhealthy.value.report.state == "CANCELED"

        # No savepoint this time: the cancelled job's retained checkpoint is the restore point.
        [newest] = deployments.retained_snapshots(flink_rest, second.job_id)
        assert newest.path.startswith("file:") and not newest.savepoint
        assert newest.id >= checkpoint["id"] and newest.path.endswith(f"/chk-{newest.id}")
        third = deploy()
        assert (third.restored_from, third.last_checkpoint) == (newest.path, newest.path)
        restored = flink_rest.checkpoints(third.job_id)["latest"]["restored"]
        assert restored["external_path"] == newest.path
    finally:
        for job_id in started:
            if flink_rest.job_state(job_id) not in ("FINISHED", "CANCELED", "FAILED"):
                flink_rest.cancel(job_id)
                flink_rest.wait_for_state(job_id, ["CANCELED"], timeout_s=30)
        _remove_retained_state(flink_rest, started, deployments.load(tmp_settings, name))


def _require_a_free_slot(client, timeout_s: float = 60) -> None:
    """The cluster is shared (two slots): without a free one a job waits, then restarts."""
    deadline = time.monotonic() + timeout_s
    while client.overview()["slots-available"] < 1:
        if time.monotonic() > deadline:
            running = [job.name for job in client.jobs() if job.state == "RUNNING"]
            pytest.fail(f"no free task slot on the Flink cluster; running: {running}")
        time.sleep(1)


def _remove_retained_state(client, job_ids: list[str], record: Deployment | None) -> None:
    """The cluster keeps cancelled jobs' checkpoints (and savepoints) in the repository's data
    dir: drop this test's."""
    folder = client.cluster_config()["execution.checkpointing.dir"].removeprefix("file://")
    for job_id in job_ids:
        shutil.rmtree(Path(folder) / job_id, ignore_errors=True)
    if record and record.last_savepoint:
        shutil.rmtree(record.last_savepoint.removeprefix("file:"), ignore_errors=True)


def test_health_of_an_unknown_job_names_it():
    class NoJobs:
        def jobs(self):
            return []

    with pytest.raises(UnhealthyJob, match="no Flink job named 'features'"):
        deployments.health(NoJobs(), "features", 60, NOW)

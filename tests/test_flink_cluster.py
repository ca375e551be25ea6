"""The local Flink cluster and the REST client, against the real cluster."""

from __future__ import annotations

import socket
import time

import pytest

from mercury.config import REPO_ROOT
from mercury.ops.flink_dist import flink_home
from mercury.ops.flink_rest import FlinkRestClient, FlinkRestError
from mercury.stack.base import PidFiles, StackError
from mercury.stack.flink_cluster import FlinkCluster

SMOKE_JOB = REPO_ROOT / "flink_jobs" / "smoke.py"


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_health_names_the_reason_when_nothing_answers(tmp_settings):
    url = f"http://127.0.0.1:{_unused_port()}"
    settings = tmp_settings.model_copy(
        update={"flink": tmp_settings.flink.model_copy(update={"rest_url": url})})
    health = FlinkCluster(settings).health()
    assert not health.ok
    assert "not answering" in health.detail and "refused" in health.detail


def test_rendered_config_has_absolute_local_paths(tmp_settings):
    try:
        flink_home()
    except StackError as exc:
        pytest.skip(str(exc))
    conf = FlinkCluster(tmp_settings).render_conf()
    text = (conf / "config.yaml").read_text()
    data_dir = tmp_settings.data_dir.resolve()
    assert "${" not in text
    assert f"file://{data_dir}/flink/checkpoints" in text
    assert f"file://{data_dir}/flink/savepoints" in text
    assert "infra/envs/flink/.venv/bin/python" in text
    assert (conf / "log4j.properties").is_file() and (conf / "workers").is_file()


@pytest.mark.stack
def test_health_ok(flink_cluster):
    health = flink_cluster.health()
    assert health.ok, health.detail
    assert "taskmanagers" in health.detail and "flink 2.3.0" in health.detail


@pytest.mark.stack
def test_rest_overview(flink_rest):
    overview = flink_rest.overview()
    assert overview["taskmanagers"] >= 1
    assert overview["slots-total"] == 2
    assert overview["flink-version"] == "2.3.0"


@pytest.mark.stack
def test_rest_errors_carry_status_and_flink_text(flink_rest):
    with pytest.raises(FlinkRestError) as raised:
        flink_rest.job("0" * 32)
    assert raised.value.status == 404
    assert "not found" in str(raised.value).lower()


@pytest.mark.stack
def test_stop_leaves_a_cluster_it_did_not_start(flink_cluster, tmp_path):
    other = FlinkCluster(flink_cluster.settings)
    other.pids = PidFiles(tmp_path / "run")  # this "stack" started nothing
    assert other.stop() == "flink: not started by this stack, left running"
    assert flink_cluster.health().ok


@pytest.mark.stack
@pytest.mark.slow
def test_job_lifecycle_through_rest(flink_rest, tmp_path):
    """Submit, run, checkpoint, stop with a savepoint, restore from it, cancel."""
    events = tmp_path / "events"
    events.mkdir()
    args = ["--events", str(events), "--job-name", "test-lifecycle"]
    job_id = flink_rest.run_python(SMOKE_JOB, args)
    restored = None
    try:
        flink_rest.wait_until_running(job_id, timeout_s=60)
        assert job_id in {job.job_id for job in flink_rest.jobs()}
        deadline = time.monotonic() + 30
        while flink_rest.latest_checkpoint(job_id) is None and time.monotonic() < deadline:
            time.sleep(1)
        age = flink_rest.checkpoint_age_s(job_id, now_ms=int(time.time() * 1000))
        assert age is not None and 0 <= age < 30

        savepoint = flink_rest.stop_with_savepoint(job_id, timeout_s=60)
        assert flink_rest.job_state(job_id) == "FINISHED"
        assert savepoint.startswith("file:")

        restored = flink_rest.run_python(SMOKE_JOB, args, savepoint_path=savepoint)
        flink_rest.wait_until_running(restored, timeout_s=60)
        restored_from = flink_rest.checkpoints(restored)["latest"]["restored"]
        assert restored_from["external_path"] == savepoint
        flink_rest.cancel(restored)
        assert flink_rest.wait_for_state(restored, ["CANCELED"], timeout_s=30) == "CANCELED"
    finally:
        for job in (job_id, restored):
            if job and flink_rest.job_state(job) == "RUNNING":
                flink_rest.cancel(job)


def test_client_reports_an_unreachable_cluster():
    client = FlinkRestClient(f"http://127.0.0.1:{_unused_port()}", timeout_s=2)
    with pytest.raises(FlinkRestError) as raised:
        client.overview()
    assert raised.value.status is None
    assert "not answering" in str(raised.value)

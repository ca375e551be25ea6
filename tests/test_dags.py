"""DAGs: they import, follow the house policy, and flink_smoke really runs on the cluster."""

from __future__ import annotations

import os
import subprocess

import pytest

from mercury.config import REPO_ROOT, load_settings
from mercury.stack.airflow_standalone import airflow_binary, airflow_env
from mercury.stack.base import StackError

DAGS_FOLDER = REPO_ROOT / "dags"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    """The DAGs parsed the way Airflow parses them, with the repository's Airflow settings."""
    env = airflow_env(load_settings("local"), home=tmp_path_factory.mktemp("airflow_home"))
    env.pop("PATH")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        # Airflow adds the plugins folder to sys.path when it loads its settings; if another
        # test imported airflow first, with other settings, do it here.
        patch.syspath_prepend(env["AIRFLOW__CORE__PLUGINS_FOLDER"])
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=DAGS_FOLDER)


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "flink_smoke" in dagbag.dags


def test_dag_policy(dagbag):
    problems = []
    for dag_id, dag in dagbag.dags.items():
        if not dag.tags:
            problems.append(f"{dag_id}: no tags")
        # Catch-up runs one DAG run per missed interval: a DAG must opt in explicitly.
        if dag.catchup and "catchup" not in dag.tags:
            problems.append(f"{dag_id}: catchup=True without the 'catchup' tag")
        for task in dag.tasks:
            if task.owner in ("", "airflow"):
                problems.append(f"{dag_id}.{task.task_id}: owner {task.owner!r}")
            if task.retries < 1:
                problems.append(f"{dag_id}.{task.task_id}: retries={task.retries}")
    assert not problems, "\n".join(problems)


@pytest.mark.stack
@pytest.mark.slow
def test_flink_smoke_dag_runs_the_job(flink_rest, tmp_path):
    """`airflow dags test flink_smoke` submits the smoke job, which reaches RUNNING and is
    cancelled at the end; checked on the cluster, not only in Airflow's log."""
    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    # A fresh AIRFLOW_HOME: its own SQLite database, nothing left from earlier runs.
    env = {**os.environ, **airflow_env(load_settings("local"), home=tmp_path / "airflow")}
    before = {job.job_id for job in flink_rest.jobs()}

    def airflow(*args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)

    migrated = airflow("db", "migrate", timeout=120)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    run = airflow("dags", "test", "flink_smoke", timeout=400)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    assert "state=success" in output, output[-5000:]

    new = [job for job in flink_rest.jobs() if job.job_id not in before]
    assert [job.name for job in new] == ["flink_smoke"], new
    details = flink_rest.job(new[0].job_id)
    assert details["timestamps"]["RUNNING"] > 0, "the job never reached RUNNING"
    assert details["state"] == "CANCELED"

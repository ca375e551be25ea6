"""``airflow dags test feature_backfill`` under ``MERCURY_PROFILE=production``, AWS on moto.

AWS is mocked: moto runs as a server in this process (S3, EMR Serverless, Glue) on a local
port, and the Airflow process reaches it through ``AWS_ENDPOINT_URL`` with fake credentials;
nothing reaches AWS. The settings are ``config/production.yaml`` with two changes a laptop
needs: the online store is the in-process one (production's is ElastiCache over TLS) and the
data folder is temporary. The run is given a warm-start cut, so ``plan`` needs no lake.

1. A run whose EMR job run fails: ``backfill_history`` fails naming the run and the state
   reason moto was told to give, nothing after it runs; the job run that was submitted has
   the backfill entry point, the content-addressed package and the run's arguments.
2. A run whose job run succeeds: ``backfill_history`` succeeds with that run's id. (The
   next step, the GX checkpoint, asks moto's Glue for the history table, which no Spark
   wrote, and stops the run there: expected, and asserted.)

Each failing step is retried once after a minute (the DAG's ``retries``), so this costs
about three and a half minutes.

The same DAG on the local profile (``local[2]`` in the worker) is
``tests/test_feature_backfill_dag.py``, unchanged.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from mercury.batch import package
from mercury.config import CONFIG_DIR
from mercury.stack.airflow_standalone import airflow_binary, airflow_env
from mercury.stack.base import StackError
from tests.airflow_fixtures import WarmAirflow, dags_test
from tests.conftest import free_port
from tests.emr_fixtures import REGION, ROLE_ARN, fail_new_job_runs, make_world

pytestmark = pytest.mark.slow

BUCKET = "mercurypay-artifacts"
REASON = "Job failed, ExitCode: 1. Last few exceptions: LakeBehind: spending.v1 (moto)"
CONF = {"feature_set": "spending", "version": 1, "start": "2026-11-01", "end": "2026-11-03",
        "cut_ms": 1_764_547_200_000}


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_home):
    from moto.server import ThreadedMotoServer

    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("backfill_emr")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    aws_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
               "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in aws_env.items():
                patch.setenv(name, value)
            aws = make_world(BUCKET)
        raw = yaml.safe_load((CONFIG_DIR / "production.yaml").read_text())
        raw["online_store"] = {"type": "memory"}
        raw["data_dir"] = str(folder / "data")
        config = folder / "production.yaml"
        config.write_text(yaml.safe_dump(raw))
        from mercury.config import load_settings

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MERCURY_CONFIG", str(config))
            patch.setenv("MERCURY_EMR_APPLICATION_ID", aws.application_id)
            patch.setenv("MERCURY_EMR_EXECUTION_ROLE_ARN", ROLE_ARN)
            settings = load_settings()
        env = {**os.environ, **airflow_env(settings, home=airflow_home(folder / "airflow")),
               **aws_env,
               "MERCURY_PROFILE": "production", "MERCURY_CONFIG": str(config),
               # The DAG's retries wait Airflow's default delay: 1 s here, not a minute.
               "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
               "MERCURY_EMR_APPLICATION_ID": aws.application_id,
               "MERCURY_EMR_EXECUTION_ROLE_ARN": ROLE_ARN,
               # The provider's default connection: no keys, the region; boto3 finds the rest.
               "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws",
                                                       "extra": {"region_name": REGION}})}

        # One Airflow process for both runs (each run's output: airflow_<n>.log in folder).
        airflow = WarmAirflow(binary, env, cwd=folder, log_dir=folder)
        try:
            yield aws, airflow, folder, config
        finally:
            airflow.close()
    finally:
        server.stop()


def _trigger(airflow: WarmAirflow, folder: Path, name: str) -> str:
    output = airflow.run(*dags_test("feature_backfill", "-c", json.dumps(CONF))).stdout
    (folder / f"{name}.log").write_text(output)  # for reading after a failure
    return output


def _states(output: str) -> dict[str, list[str]]:
    """Each task's attempts in ``dags test``'s log, in order, by the state each ended in."""
    states: dict[str, list[str]] = {}
    for attempt in output.split("[DAG TEST] starting task_id=")[1:]:
        task = attempt.split(" ", 1)[0]
        ended = re.findall(r"new_state=(\w+)", attempt)
        states.setdefault(task, []).append(ended[-1] if ended else "unknown")
    return states


def _run_state(output: str) -> str | None:
    found = re.search(r"DagRun Finished: dag_id=feature_backfill,.*? state=(\w+)", output)
    return found.group(1) if found else None


def test_a_failed_job_run_fails_the_backfill_task(world, monkeypatch):
    aws, airflow, folder, _config = world
    fail_new_job_runs(monkeypatch, REASON)  # moto's server thread shares this process's models
    output = _trigger(airflow, folder, "failed")

    # The DAG's one retry submits a second run; each attempt fails naming its own run.
    runs = aws.job_runs()
    assert len(runs) == 2 and {r["state"] for r in runs} == {"FAILED"}, output[-6000:]
    for run in runs:
        assert (f"SparkJobRunFailed: EMR Serverless job run {run['jobRunId']} "
                f"(backfill spending.v1 2026-11-01..2026-11-03) on application "
                f"{aws.application_id} ended FAILED: {REASON}") in output
    states = _states(output)
    assert states["plan"] == ["success"]
    assert states["backfill_history"] == ["up_for_retry", "failed"], states
    assert set(states) == {"plan", "backfill_history"}  # nothing after it ran
    assert _run_state(output) == "failed"
    run = runs[-1]

    code = package.build()
    driver = run["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == \
        f"s3://{BUCKET}/spark/code/{code.short}/spark_jobs/backfill.py"
    assert f"--py-files s3://{BUCKET}/spark/code/{code.short}/mercury.zip" in \
        driver["sparkSubmitParameters"]
    arguments = driver["entryPointArguments"]
    assert arguments[:6] == ["--feature-set", "spending.v1", "--start", "2026-11-01",
                             "--end", "2026-11-03"]
    assert arguments[-2:] == ["--config", package.SETTINGS_NAME]


def test_a_successful_job_run_lets_the_backfill_task_succeed(world):
    aws, airflow, folder, _config = world
    before = {r["jobRunId"] for r in aws.job_runs()}
    output = _trigger(airflow, folder, "succeeded")
    new = [r for r in aws.job_runs() if r["jobRunId"] not in before]
    assert len(new) == 1 and new[0]["state"] == "SUCCESS", output[-6000:]
    assert f"started job run {new[0]['jobRunId']}" in output
    states = _states(output)
    assert states["backfill_history"] == ["success"], output[-6000:]
    # Moto's lake holds no history: the checkpoint fails (and its retry), and nothing after it.
    assert states["check_history"][-1] == "failed"
    assert "HistoryError: features.spending_v1 does not exist" in output  # asked moto's Glue
    assert "warm_start_online" not in states and _run_state(output) == "failed"

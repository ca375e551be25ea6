"""The production Spark binding: batch jobs as EMR Serverless job runs.

AWS is mocked by moto (S3, EMR Serverless, Glue, in this process): what is asserted is what
we send (entry point, package, arguments, Spark conf), what we upload, how we poll and what
a failed run does to the task. moto finishes a job run at once and never runs Spark; a run's
progress (RUNNING, then SUCCESS) and its failure are set on moto's model by the tests.
The local binding is shown choosing ``local[2]`` in this process; the whole local DAG is
``tests/test_feature_backfill_dag.py``.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import date

import moto
import pytest
import yaml

from mercury.batch import emr_serverless, jobs, package
from mercury.config import CONFIG_DIR, REPO_ROOT, ConfigError, load_settings
from tests.emr_fixtures import REGION, ROLE_ARN, fail_new_job_runs, fake_credentials, make_world

BUCKET = "mercurypay-artifacts"


@pytest.fixture(autouse=True)
def _plugins_importable(monkeypatch):
    """The DAGs' steps, imported as Airflow does (plugins/ on sys.path)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))


@pytest.fixture
def aws(monkeypatch):
    fake_credentials(monkeypatch)
    with moto.mock_aws():
        world = make_world(BUCKET)
        monkeypatch.setenv("MERCURY_EMR_APPLICATION_ID", world.application_id)
        monkeypatch.setenv("MERCURY_EMR_EXECUTION_ROLE_ARN", ROLE_ARN)
        yield world


@pytest.fixture
def production(monkeypatch):
    monkeypatch.delenv("MERCURY_CONFIG", raising=False)
    monkeypatch.setenv("MERCURY_PROFILE", "production")
    return load_settings()


def _plan(version: int = 1) -> dict:
    from mercury.features.definition import dsl
    from mercury.features.definition.compile import digest, load_one

    feature_set = load_one(f"spending.v{version}")
    return {"feature_set": "spending", "version": version, "start": "2026-11-01",
            "end": "2026-11-03", "cut_ms": 1_764_547_200_000, "previous_version": None,
            "promote": True, "spec": dsl.to_dict(feature_set), "digest": digest(feature_set)}


def _conf(parameters: str) -> dict[str, str]:
    words = parameters.split(" ")
    return dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--conf")


def test_backfill_step_submits_the_entry_point_with_the_packaged_code(aws, production):
    from mercury_airflow.tasks import feature_backfill as steps

    plan = _plan()
    result = steps.backfill_history(production, plan, log=lambda _: None)

    (run,) = aws.job_runs()
    assert result["job_run_id"] == run["jobRunId"] and result["state"] == "SUCCESS"
    code = package.build()
    prefix = f"s3://{BUCKET}/spark/code/{code.short}"
    driver = run["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"{prefix}/spark_jobs/backfill.py"
    assert driver["entryPointArguments"] == [
        "--feature-set", "spending.v1", "--start", "2026-11-01", "--end", "2026-11-03",
        "--spec-digest", plan["digest"], "--config", package.SETTINGS_NAME]
    assert run["executionRole"] == ROLE_ARN
    parameters = driver["sparkSubmitParameters"]
    settings_sha = hashlib.sha256((CONFIG_DIR / "production.yaml").read_bytes()).hexdigest()
    settings_uri = f"{prefix}/settings/{settings_sha[:12]}/{package.SETTINGS_NAME}"
    assert parameters.startswith(f"--py-files {prefix}/mercury.zip --files {settings_uri} ")
    conf = _conf(parameters)
    assert conf["spark.jars.packages"].startswith("org.apache.iceberg:iceberg-spark-runtime-")
    assert conf["spark.sql.catalog.glue.catalog-impl"] == "org.apache.iceberg.aws.glue.GlueCatalog"
    assert conf["spark.sql.catalog.glue.warehouse"] == "s3://mercurypay-lake/warehouse"
    assert conf["spark.sql.extensions"] == emr_serverless.ICEBERG_EXTENSIONS
    assert conf["spark.emr-serverless.driverEnv.MERCURY_PROFILE"] == "production"
    assert conf["spark.executor.memory"] == "16g"  # production.yaml's sizes, passed through
    assert "spark.master" not in conf

    # What the run names is what was uploaded, byte for byte.
    def body(uri: str) -> bytes:
        key = uri.split("/", 3)[3]
        return aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    assert hashlib.sha256(body(f"{prefix}/mercury.zip")).hexdigest() == code.sha256
    assert body(driver["entryPoint"]) == (REPO_ROOT / "spark_jobs/backfill.py").read_bytes()
    assert body(settings_uri) == (CONFIG_DIR / "production.yaml").read_bytes()


def test_the_other_spark_steps_and_the_training_set_go_through_the_same_binding(aws, production):
    from mercury_airflow.tasks import feature_backfill as steps

    plan = _plan()
    steps.warm_start_online(production, plan, log=lambda _: None)
    gate = steps.consistency_gate(production, plan, log=lambda _: None)
    assert gate["state"] == "SUCCESS" and gate["min_share"] == 1.0
    training = jobs.training_set("s3://mercurypay-lake/labels/fraud.parquet",
                                 ["spending.v1", "risk.v1"], "s3://mercurypay-lake/out/t1")
    emr_serverless.run(production, training, emr=aws.emr, s3=aws.s3, log=lambda _: None)

    runs = {r["jobDriver"]["sparkSubmit"]["entryPoint"].rsplit("/", 1)[1]:
            r["jobDriver"]["sparkSubmit"]["entryPointArguments"] for r in aws.job_runs()}
    assert runs == {
        "warm_start.py": ["--feature-set", "spending.v1", "--cut-ms", "1764547200000",
                          "--spec-digest", plan["digest"], "--config", package.SETTINGS_NAME],
        "consistency.py": ["online", "--feature-set", "spending.v1", "--as-of-ms",
                           "1764547200000", "--min-share", "1.0", "--sample", "10000",
                           "--config", package.SETTINGS_NAME],
        "training_set.py": ["--labels", "s3://mercurypay-lake/labels/fraud.parquet",
                            "--feature-sets", "spending.v1,risk.v1",
                            "--output", "s3://mercurypay-lake/out/t1",
                            "--config", package.SETTINGS_NAME]}
    # One code package for all of them: uploaded once.
    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sum(key.endswith("/mercury.zip") for key in keys) == 1


def _progress_then(monkeypatch, final: str, details: str | None = None, running_polls: int = 2):
    """moto's runs start RUNNING; after ``running_polls`` sleeps they end ``final``."""
    from moto.emrserverless import models

    monkeypatch.setattr(models, "JOB_STATUS", "RUNNING")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == running_polls:
            for backend in models.emrserverless_backends.values():
                for region in backend.values():
                    for runs in region.job_runs.values():
                        for run in runs:
                            run.state, run.state_details = final, details
    return sleeps, sleep


def test_a_run_is_polled_until_it_succeeds(aws, production, monkeypatch):
    sleeps, sleep = _progress_then(monkeypatch, "SUCCESS")
    job = jobs.backfill("spending.v1", date(2026, 11, 1), date(2026, 11, 3))
    lines: list[str] = []
    outcome = emr_serverless.run(production, job, emr=aws.emr, s3=aws.s3, log=lines.append,
                                 sleep=sleep)
    assert (outcome.state, outcome.polls) == ("SUCCESS", 3)
    assert sleeps == [30.0, 30.0]  # spark_submit.poll_interval_s
    assert [line.rsplit(" ", 1)[1] for line in lines if " is " in line] == ["RUNNING", "SUCCESS"]


def test_a_failed_run_fails_the_task_naming_the_run_and_its_reason(aws, production,
                                                                   monkeypatch):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from mercury_airflow.tasks import feature_backfill as steps

    reason = "Job failed, ExitCode: 1. Last few exceptions: LakeBehind: spending.v1"
    fail_new_job_runs(monkeypatch, reason)
    with pytest.raises(AirflowException) as failure:
        steps.backfill_history(production, _plan(), log=lambda _: None)
    (run,) = aws.job_runs()
    message = str(failure.value)
    assert run["jobRunId"] in message and aws.application_id in message
    assert "ended FAILED" in message and reason in message
    # A lost executor may not happen twice: the task's retries apply (not a fail-fast error).
    assert not isinstance(failure.value, AirflowFailException)


def test_a_run_past_its_wait_is_cancelled_and_fails(aws, production, monkeypatch):
    _sleeps, sleep = _progress_then(monkeypatch, "SUCCESS", running_polls=99)
    times = iter([0.0, 10.0, 7 * 3600.0])
    job = jobs.backfill("spending.v1", date(2026, 11, 1), date(2026, 11, 1))
    job_run_id = _start(aws, production, job)
    with pytest.raises(emr_serverless.SparkJobFailed, match="still RUNNING after 21600 s"):
        emr_serverless.wait(aws.emr, aws.application_id, job_run_id, job.name,
                            poll_interval_s=1, max_wait_s=6 * 3600, log=lambda _: None,
                            sleep=sleep, clock=lambda: next(times))
    (run,) = aws.job_runs()
    assert run["state"] == "CANCELLED"


def _start(aws, settings, job) -> str:
    code, settings_uri = package.upload(aws.s3, package.build(), BUCKET, "spark/code",
                                        CONFIG_DIR / "production.yaml")
    request = emr_serverless.start_request(settings, job, code, settings_uri)
    return aws.emr.start_job_run(**request)["jobRunId"]


def test_the_package_is_reproducible_and_names_its_content(tmp_path):
    first, second = package.build(), package.build()
    assert first.sha256 == second.sha256 and first.data == second.data
    assert set(first.scripts) >= {"spark_jobs/backfill.py", "spark_jobs/training_set.py",
                                  "spark_jobs/consistency.py", "spark_jobs/warm_start.py"}
    copy = tmp_path / "repo"
    for name in package.PACKAGES:
        shutil.copytree(REPO_ROOT / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    assert package.build(copy).sha256 == first.sha256  # another folder, other mtimes
    edited = copy / "spark_jobs" / "backfill.py"
    edited.write_text(edited.read_text() + "\n# changed\n")
    assert package.build(copy).sha256 != first.sha256


def test_the_local_binding_runs_the_step_here_on_local2(tmp_settings, monkeypatch):
    """Locally nothing is submitted: the step's own work runs in this process, on the
    settings' Spark session (``local[2]``), as before the binding existed."""
    from mercury_airflow.hooks import spark_submit

    def no_aws(_settings):
        raise AssertionError("the local binding must not reach AWS")

    monkeypatch.setattr(spark_submit, "emr_serverless_clients", no_aws)
    assert tmp_settings.spark_submit.type == "local"
    assert tmp_settings.spark.master == "local[2]"
    job = jobs.backfill("spending.v1", date(2026, 11, 1), date(2026, 11, 1))
    ran = spark_submit.run_spark(tmp_settings, job, lambda: {"here": True}, log=print)
    assert ran == {"here": True}


def test_a_local_job_runs_its_entry_point_and_a_failure_names_it():
    """``mercury batch submit`` on the local binding: ``python -m spark_jobs.<job>`` here; an
    unknown set exits 2 before Spark starts, and the failure names the job and exit code."""
    from mercury.batch import local
    from mercury.batch.errors import SparkJobFailed

    job = jobs.backfill("nope.v9", date(2026, 11, 1), date(2026, 11, 1))
    lines: list[str] = []
    with pytest.raises(SparkJobFailed, match=r"-m spark_jobs\.backfill --feature-set nope\.v9 "
                                             r".* exited 2"):
        local.run(job, log=lines.append)
    assert any("'nope.v9' is not a compiled feature set" in line for line in lines)


def test_production_refuses_a_local_spark_binding(tmp_path, monkeypatch):
    raw = yaml.safe_load((CONFIG_DIR / "production.yaml").read_text())
    raw["spark"] = {"master": "local[2]"}
    raw["spark_submit"] = {"type": "local"}
    path = tmp_path / "production.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "spark_submit.type must be 'emr_serverless'" in str(refused.value)
    assert "spark.master is 'local[2]'" in str(refused.value)


def test_a_missing_application_id_names_the_variable(production, monkeypatch):
    monkeypatch.delenv("MERCURY_EMR_APPLICATION_ID", raising=False)
    with pytest.raises(ConfigError, match="MERCURY_EMR_APPLICATION_ID"):
        production.spark_submit.resolved("application_id")


def test_bad_job_arguments_are_refused_before_anything_is_uploaded():
    with pytest.raises(ValueError, match="feature_set 'spending' is not a feature set ref"):
        jobs.backfill("spending", date(2026, 11, 1), date(2026, 11, 2))
    with pytest.raises(ValueError, match="end 2026-11-01 is before start 2026-11-02"):
        jobs.backfill("spending.v1", date(2026, 11, 2), date(2026, 11, 1))
    with pytest.raises(ValueError, match="min_share 1.5"):
        jobs.consistency_online("spending.v1", as_of_ms=0, min_share=1.5)


def test_the_lake_catalog_the_jobs_use_is_glue(aws, production):
    """The jobs' lake catalog under the production profile is pyiceberg's Glue catalog
    (moto's Glue): a namespace made through it is a Glue database. (Table data goes through
    pyarrow's own S3 client, which moto in this process does not intercept.)"""
    import boto3

    from mercury.lake import tables

    tables.catalog(production).create_namespace("features")
    glue = boto3.client("glue", region_name=REGION)
    assert [d["Name"] for d in glue.get_databases()["DatabaseList"]] == ["features"]


# ---- secrets: by reference in the job run, fetched by the entry point ------------------------

REDIS_SECRET = "mercury-euw1-online/redis-auth"


def test_a_job_runs_secret_travels_by_reference_and_the_entry_point_fetches_it(
        aws, production, monkeypatch):
    """The Redis password of a warm start: the job run (arguments, Spark conf, the settings
    file it ships) carries the secret's name only; ``spark_jobs.start`` on the driver reads
    the value from Secrets Manager (moto) and the online store's client gets it."""
    import json

    import boto3

    import spark_jobs
    from mercury.features.executors.spark import session

    value = "elasticache-token-0123456789abcdef"
    manager = boto3.client("secretsmanager", region_name=REGION)
    manager.create_secret(Name=REDIS_SECRET, SecretString=value)
    assert production.spark_submit.secrets == {"MERCURY_REDIS_AUTH": REDIS_SECRET}
    # The submitter has no secret; what start() sets is undone after the test.
    for variable in ("MERCURY_REDIS_AUTH", "MERCURY_CONFIG"):
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)

    job = jobs.warm_start("spending.v1", 1_764_547_200_000)
    emr_serverless.run(production, job, emr=aws.emr, s3=aws.s3, log=lambda _: None)
    (run,) = aws.job_runs()
    assert value not in json.dumps(run, default=str)
    uploaded = [aws.s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                for o in aws.s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert not any(value.encode() in body for body in uploaded)
    shipped = next(body for body in uploaded if b"spark_submit:" in body)
    assert REDIS_SECRET.encode() in shipped  # the reference is what the run carries

    # The driver: the settings file the run ships, the secret fetched before any connection.
    monkeypatch.setattr(session, "session", lambda spark: "spark-session")
    settings, spark = spark_jobs.start(str(CONFIG_DIR / "production.yaml"))
    assert spark == "spark-session"
    assert settings.online_store.connection_kwargs()["password"] == value


def test_an_unreadable_secret_fails_the_job_naming_the_setting(aws, production):
    from mercury.batch import secrets

    with pytest.raises(ConfigError, match=r"spark_submit\.secrets\.MERCURY_REDIS_AUTH: cannot "
                                          r"read secret 'mercury-euw1-online/redis-auth' "
                                          r"\(ResourceNotFoundException\)"):
        secrets.into_environment(production, environ={})


def _production_with(tmp_path, monkeypatch, **spark_submit) -> str:
    raw = yaml.safe_load((CONFIG_DIR / "production.yaml").read_text())
    raw["spark_submit"].update(spark_submit)
    path = tmp_path / "production.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    return str(refused.value)


def test_production_refuses_a_literal_secret_in_its_settings(tmp_path, monkeypatch):
    # A token pasted in place of the secret's name.
    message = _production_with(tmp_path, monkeypatch,
                               secrets={"MERCURY_REDIS_AUTH": "Zk3v9QpL2mXr7TnB"})
    assert "spark_submit.secrets.MERCURY_REDIS_AUTH is not a Secrets Manager secret" in message
    # The value as a driver variable in the Spark conf: in every job run's parameters.
    message = _production_with(tmp_path, monkeypatch, spark_conf={
        "spark.emr-serverless.driverEnv.MERCURY_REDIS_AUTH": "Zk3v9QpL2mXr7TnB"})
    assert ("spark_submit.spark_conf.spark.emr-serverless.driverEnv.MERCURY_REDIS_AUTH would "
            "carry a secret's value in the job run") in message
    # The secret left out: the warm start would reach Redis with no password.
    message = _production_with(tmp_path, monkeypatch, secrets={})
    assert "spark_submit.secrets has no MERCURY_REDIS_AUTH" in message
    # A misspelt variable: the one the store reads is missing.
    message = _production_with(tmp_path, monkeypatch, secrets={
        "MERCURY_REDIS_AUT": REDIS_SECRET})
    assert "spark_submit.secrets has no MERCURY_REDIS_AUTH" in message

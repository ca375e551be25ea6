"""A batch job as an EMR Serverless job run: the request, the submission and the wait.

The request names the content-addressed code (``package``): the entry point script, the zip on
``--py-files`` and the settings file on ``--files`` (the job reads it with ``--config``). Its
Spark conf adds the Iceberg runtime and a Glue-backed Iceberg catalog over the lake's
warehouse, the profile for the driver and executors, and the configured sizes. ``wait`` polls
the run to a terminal state; any end but ``SUCCESS`` raises ``SparkJobFailed`` naming the run,
its state and the service's reason (``stateDetails``).

Clients are passed in: ``EmrServerlessHook(...).conn`` in Airflow, moto in tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mercury.batch.errors import SparkJobFailed
from mercury.batch.package import SETTINGS_NAME, UploadedCode

if TYPE_CHECKING:
    from mercury.batch.jobs import SparkJob
    from mercury.config import EmrServerlessSubmitConfig, Settings

SUCCESS = "SUCCESS"
FAILED_STATES = frozenset({"FAILED", "CANCELLED"})
ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"


def spark_conf(settings: Settings, submit: EmrServerlessSubmitConfig) -> dict[str, str]:
    """Every ``--conf`` of the job run, in a stable order (tests assert on it)."""
    catalog = f"spark.sql.catalog.{submit.glue_catalog_name}"
    conf = {
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.jars.packages": ",".join(submit.iceberg_packages),
        "spark.sql.extensions": ICEBERG_EXTENSIONS,
        catalog: "org.apache.iceberg.spark.SparkCatalog",
        f"{catalog}.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        f"{catalog}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        f"{catalog}.warehouse": settings.lake.warehouse,
        # The job reads the same profile and region on the driver and the executors.
        "spark.emr-serverless.driverEnv.MERCURY_PROFILE": settings.profile,
        "spark.executorEnv.MERCURY_PROFILE": settings.profile,
        "spark.emr-serverless.driverEnv.AWS_REGION": submit.region,
        "spark.executorEnv.AWS_REGION": submit.region,
    }
    if submit.python_env_archive:
        python = "./environment/bin/python"
        conf.update({"spark.archives": f"{submit.python_env_archive}#environment",
                     "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": python,
                     "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": python,
                     "spark.executorEnv.PYSPARK_PYTHON": python})
    conf.update(settings.spark.conf)
    conf.update(submit.spark_conf)
    return conf


def submit_parameters(code: UploadedCode, settings_uri: str, conf: dict[str, str]) -> str:
    """``sparkSubmitParameters``: the code zip (``--py-files``), the settings file
    (``--files``, into the driver's working folder) and one ``--conf k=v`` per setting."""
    for key, value in conf.items():
        if any(c.isspace() for c in key + value):
            raise ValueError(f"spark conf {key}={value!r}: whitespace would split the "
                             "submit parameters")
    return " ".join([f"--py-files {code.zip_uri}", f"--files {settings_uri}",
                     *(f"--conf {key}={value}" for key, value in conf.items())])


def start_request(settings: Settings, job: SparkJob, code: UploadedCode, settings_uri: str,
                  *, client_token: str | None = None) -> dict[str, Any]:
    """The ``start_job_run`` keyword arguments for ``job``."""
    submit = settings.spark_submit
    assert submit.type == "emr_serverless", "start_request needs spark_submit: emr_serverless"
    request: dict[str, Any] = {
        "applicationId": submit.resolved("application_id"),
        "executionRoleArn": submit.resolved("execution_role_arn"),
        "clientToken": client_token or uuid.uuid4().hex,
        "name": job.name,
        "jobDriver": {"sparkSubmit": {
            "entryPoint": code.script_uri(job.script),
            "entryPointArguments": [*job.arguments, "--config", SETTINGS_NAME],
            "sparkSubmitParameters": submit_parameters(code, settings_uri,
                                                       spark_conf(settings, submit)),
        }},
        "executionTimeoutMinutes": submit.execution_timeout_minutes,
        "tags": {"mercury:job": job.entry_point, "mercury:code": code.sha256[:12]},
    }
    if submit.logs_uri:
        request["configurationOverrides"] = {"monitoringConfiguration": {
            "s3MonitoringConfiguration": {"logUri": submit.logs_uri}}}
    return request


@dataclass(frozen=True)
class JobRunOutcome:
    application_id: str
    job_run_id: str
    state: str
    polls: int

    def to_xcom(self) -> dict[str, Any]:
        return {"application_id": self.application_id, "job_run_id": self.job_run_id,
                "state": self.state, "polls": self.polls}


def wait(client: Any, application_id: str, job_run_id: str, name: str, *,
         poll_interval_s: float, max_wait_s: float, log: Callable[[str], None],
         sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> JobRunOutcome:
    """Poll ``get_job_run`` until a terminal state; ``SparkJobFailed`` unless ``SUCCESS``.
    Past ``max_wait_s`` the run is cancelled (it would go on costing) and that fails too."""
    deadline, polls, seen = clock() + max_wait_s, 0, None
    while True:
        run = client.get_job_run(applicationId=application_id, jobRunId=job_run_id)["jobRun"]
        polls += 1
        state = run["state"]
        if state != seen:
            log(f"emr-serverless: {name}: job run {job_run_id} is {state}")
            seen = state
        if state == SUCCESS:
            return JobRunOutcome(application_id, job_run_id, state, polls)
        if state in FAILED_STATES:
            reason = run.get("stateDetails") or "no reason given"
            raise SparkJobFailed(f"EMR Serverless job run {job_run_id} ({name}) on application "
                                 f"{application_id} ended {state}: {reason}",
                                 job_run_id=job_run_id, state=state)
        if clock() >= deadline:
            client.cancel_job_run(applicationId=application_id, jobRunId=job_run_id)
            raise SparkJobFailed(f"EMR Serverless job run {job_run_id} ({name}) on application "
                                 f"{application_id} still {state} after {max_wait_s:.0f} s; "
                                 "cancelled it", job_run_id=job_run_id, state=state)
        sleep(poll_interval_s)


def run(settings: Settings, job: SparkJob, *, emr: Any, s3: Any,
        log: Callable[[str], None], client_token: str | None = None,
        sleep: Callable[[float], None] = time.sleep) -> JobRunOutcome:
    """Package and upload the code, start ``job``'s run and wait for its end."""
    from mercury.batch.package import build, upload
    from mercury.config import config_path

    submit = settings.spark_submit
    assert submit.type == "emr_serverless", "run needs spark_submit: emr_serverless"
    package = build()
    code, settings_uri = upload(s3, package, submit.code_bucket, submit.code_prefix,
                                config_path())
    request = start_request(settings, job, code, settings_uri, client_token=client_token)
    started = emr.start_job_run(**request)
    log(f"emr-serverless: {job.name}: started job run {started['jobRunId']} on application "
        f"{request['applicationId']} (code {code.sha256[:12]}, entry point "
        f"{request['jobDriver']['sparkSubmit']['entryPoint']})")
    return wait(emr, request["applicationId"], started["jobRunId"], job.name,
                poll_interval_s=submit.poll_interval_s, max_wait_s=submit.max_wait_s,
                log=log, sleep=sleep)

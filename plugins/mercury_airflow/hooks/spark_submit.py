"""The batch jobs' Spark binding inside Airflow, chosen by ``spark_submit`` in the settings.

``local`` (the local default): the step's own work runs in this process on the settings'
Spark session (``local[2]``), exactly as before there was a choice. ``emr_serverless``
(production): the same job, as its ``spark_jobs`` entry point, becomes an EMR Serverless job
run through the Amazon provider's hooks (``EmrServerlessHook`` for the run, ``S3Hook`` for the
code), on the connection ``spark_submit.aws_conn_id`` (MWAA: the environment's role). The task
waits for the run's end; a run that does not succeed fails the task with the run's id, state
and reason (retried like any other failure: a lost executor may not happen twice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from mercury.batch.jobs import SparkJob
    from mercury.config import Settings


class SparkJobRunFailed(AirflowException):
    """The job run ended in another state than success (the message says which and why)."""


def emr_serverless_clients(settings: Settings) -> tuple[Any, Any]:
    """(emr-serverless, s3) boto3 clients from the provider's hooks."""
    from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    submit = settings.spark_submit
    assert submit.type == "emr_serverless"
    emr = EmrServerlessHook(aws_conn_id=submit.aws_conn_id, region_name=submit.region).conn
    s3 = S3Hook(aws_conn_id=submit.aws_conn_id, region_name=submit.region).get_conn()
    return emr, s3


def run_spark(settings: Settings, job: SparkJob, here: Callable[[], dict[str, Any]], *,
              log: Callable[[str], None]) -> dict[str, Any]:
    """``here()`` on the local binding; else ``job`` on EMR Serverless, its outcome as XCom."""
    if settings.spark_submit.type == "local":
        return here()
    from mercury.batch import emr_serverless
    from mercury.batch.errors import SparkJobFailed

    emr, s3 = emr_serverless_clients(settings)
    try:
        outcome = emr_serverless.run(settings, job, emr=emr, s3=s3, log=log)
    except SparkJobFailed as exc:
        raise SparkJobRunFailed(str(exc)) from exc
    return {"job": job.name, **outcome.to_xcom()}

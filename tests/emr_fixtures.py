"""AWS for the batch submission tests, mocked by moto (S3, EMR Serverless, Glue): nothing
here reaches AWS. ``aws_world`` makes the code bucket and an EMR Serverless application and
hands its ids over the environment variables the production profile names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

REGION = "eu-west-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/mercury-emr-jobs"


@dataclass
class AwsWorld:
    emr: Any
    s3: Any
    application_id: str
    bucket: str

    def job_runs(self) -> list[dict]:
        listed = self.emr.list_job_runs(applicationId=self.application_id)["jobRuns"]
        return [self.emr.get_job_run(applicationId=self.application_id,
                                     jobRunId=run["id"])["jobRun"] for run in listed]


def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)


def make_world(bucket: str) -> AwsWorld:
    """Bucket and application in whatever moto is active (decorator or server)."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    emr = boto3.client("emr-serverless", region_name=REGION)
    # Production's release is emr-spark-8.0.0 (Terraform's choice, decision 0018); moto
    # accepts only labels shaped emr-X.Y.0, and the label plays no part in what is tested.
    application = emr.create_application(name="mercury-batch", releaseLabel="emr-7.12.0",
                                         type="SPARK")
    return AwsWorld(emr, s3, application["applicationId"], bucket)


def fail_new_job_runs(monkeypatch: pytest.MonkeyPatch, reason: str) -> None:
    """moto's job runs made from now on end FAILED at once, with ``reason`` as stateDetails
    (moto's models live in this process, also when moto runs as a thread server)."""
    from moto.emrserverless import models

    monkeypatch.setattr(models, "JOB_STATUS", "FAILED")
    original = models.JobRun.__init__

    def failed_with_reason(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.state_details = reason

    monkeypatch.setattr(models.JobRun, "__init__", failed_with_reason)

"""``mercury batch ...``: the Spark jobs through the configured binding (``spark_submit``).

``submit JOB -- ARGS``: ``spark_jobs.<JOB>`` with ARGS, on ``local[2]`` in a child process
locally, as an EMR Serverless job run in production (plain boto3 clients with the caller's
AWS credentials); it waits for the end and exits non-zero if the job failed.
``package``: the content hash the code package would have (what a job run would name).
"""

from __future__ import annotations

import argparse

from mercury.batch.jobs import ENTRY_POINTS
from mercury.errors import CommandError


def register(subparsers) -> argparse.ArgumentParser:
    batch = subparsers.add_parser("batch", help="run a Spark job where the profile says")
    actions = batch.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = actions.add_parser("submit", help="run spark_jobs.<JOB> (local[2] or EMR)")
    submit.add_argument("job", choices=ENTRY_POINTS)
    submit.add_argument("arguments", nargs=argparse.REMAINDER,
                        help="the entry point's own arguments, after --")
    submit.set_defaults(run=_submit)
    pack = actions.add_parser("package", help="print the code package's content hash")
    pack.set_defaults(run=_package)
    return batch


def _submit(args) -> int:
    from mercury.batch.errors import SparkJobFailed
    from mercury.batch.jobs import SparkJob
    from mercury.config import load_settings

    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    job = SparkJob(args.job, tuple(arguments), f"{args.job} (mercury batch submit)")
    settings = load_settings()
    try:
        if settings.spark_submit.type == "local":
            from mercury.batch import local

            local.run(job, log=print)
        else:
            import boto3

            from mercury.batch import emr_serverless

            region = settings.spark_submit.region
            outcome = emr_serverless.run(settings, job, log=print,
                                         emr=boto3.client("emr-serverless", region_name=region),
                                         s3=boto3.client("s3", region_name=region))
            print(f"{job.name}: job run {outcome.job_run_id} {outcome.state}")
    except SparkJobFailed as exc:
        raise CommandError(str(exc)) from exc
    return 0


def _package(_args) -> int:
    from mercury.batch.package import build

    package = build()
    print(f"sha256 {package.sha256} ({len(package.data):,} bytes, "
          f"entry points: {', '.join(sorted(package.scripts))})")
    return 0

"""A batch job on this machine: ``python -m spark_jobs.<job> <arguments>`` on ``local[2]``.

The same command line the job run on EMR gets, in a child process of this interpreter with
the caller's settings (``MERCURY_CONFIG`` / ``MERCURY_PROFILE`` pass through the environment).
The DAG's steps run their jobs in their own process instead (one Spark session per worker,
as before); this is for jobs started from the command line (``mercury batch submit``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from mercury.batch.errors import SparkJobFailed
from mercury.batch.jobs import SparkJob
from mercury.config import REPO_ROOT


def command(job: SparkJob) -> list[str]:
    return [sys.executable, "-m", job.module, *job.arguments]


def run(job: SparkJob, *, log: Callable[[str], None]) -> int:
    """Run ``job`` to its end, its output line by line to ``log``; ``SparkJobFailed`` naming
    the job and its exit code unless it exits 0."""
    with subprocess.Popen(command(job), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            log(line.rstrip("\n"))
    if process.returncode != 0:
        raise SparkJobFailed(f"local job {job.name} ({' '.join(command(job)[1:])}) exited "
                             f"{process.returncode}", state=f"exit {process.returncode}")
    return process.returncode

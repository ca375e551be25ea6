"""The SQL job's Java functions (infra/flink-udf), registered in a test's TableEnvironment."""

from __future__ import annotations

from typing import Any

import pytest

from mercury.features.executors.flinksql import job


def register_java_functions(t_env: Any) -> None:
    if not job.UDF_JAR.exists():
        pytest.fail(f"{job.UDF_JAR} is missing: `make setup` builds it")
    job.register_java_functions(t_env)

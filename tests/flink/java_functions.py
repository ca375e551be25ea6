"""The SQL job's Java functions (infra/flink-udf), registered in a test's TableEnvironment."""

from __future__ import annotations

from typing import Any

import pytest

from mercury.features.executors.flinksql.job import JAVA_FUNCTIONS, UDF_JAR, udf_jar_url


def register_java_functions(t_env: Any) -> None:
    if not UDF_JAR.exists():
        pytest.fail(f"{UDF_JAR} is missing: `make setup` builds it")
    for name, java_class in JAVA_FUNCTIONS.items():
        t_env.execute_sql(f"CREATE TEMPORARY SYSTEM FUNCTION {name} AS "
                          f"'com.mercurypay.flink.{java_class}' LANGUAGE JAVA "
                          f"USING JAR '{udf_jar_url()}'")

"""One Spark session per test run, tuned for small data on a busy two-core machine.

Import the fixture into a test module (``from tests.spark_fixtures import spark``). Whole-stage
code generation is off and the JIT stops at C1: on a few thousand rows compiling costs more
than it saves (measured: the first pass of the six sets took 41 s instead of 113 s).
"""

from __future__ import annotations

import shutil

import pytest

from mercury.features.executors.spark.session import SparkConfig

TEST_CONFIG = SparkConfig(
    app_name="mercury-tests", shuffle_partitions=2, driver_memory="1g",
    conf={"spark.sql.codegen.wholeStage": "false",
          "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"})


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime for Spark")
    from mercury.features.executors.spark.session import session

    spark = session(TEST_CONFIG)
    yield spark
    spark.stop()

"""The Spark session the batch jobs and tests run on, built from typed config.

Locally Spark is ``local[2]`` (ARCHITECTURE.md: "EMR Spark | local Spark"); on EMR the same
code gets its master and resources from the cluster (``master=None`` leaves them to
``spark-submit``). The session is always in UTC (epoch-millisecond times never meet a local
time zone), moves data to and from Python through Arrow, and logs only errors.

There is no Iceberg runtime jar here, so nothing Iceberg is configured: jobs read the lake
through pyiceberg scan planning and hand Arrow to Spark
(``mercury.features.executors.spark.executor``). On EMR Serverless the job run's submit
parameters add the runtime and a Glue catalog (``mercury.batch.emr_serverless``).

pyspark is imported inside ``session``: importing this module stays cheap.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from mercury.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from mercury.config import Settings


def spark_config(settings: Settings | None = None) -> SparkConfig:
    """The ``spark`` section of the settings, or the local defaults without settings."""
    return SparkConfig() if settings is None else settings.spark


def session_conf(config: SparkConfig) -> dict[str, str]:
    """Every setting the builder is given (also what tests assert on)."""
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(config.shuffle_partitions),
        "spark.default.parallelism": str(config.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.arrow_batch_rows),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.jsonGenerator.ignoreNullFields": "false",
        # Aggregates of maps and lists (the executor's nesting) stay hash-based per task
        # instead of falling back to sorting after 128 keys.
        "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "65536",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": config.driver_memory,
    }
    if config.master is not None and config.master.startswith("local"):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    conf.update(config.conf)
    return conf


def session(config: SparkConfig | None = None) -> SparkSession:
    """A session built from ``config`` (the local defaults if None); reused if one runs."""
    from pyspark.sql import SparkSession

    # Python workers (mapInArrow in the warm start) run this interpreter, with this venv's
    # packages, unless the environment names another one; read once, when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    config = config or SparkConfig()
    builder = SparkSession.builder.appName(config.app_name)
    if config.master is not None:
        builder = builder.master(config.master)
    for key, value in session_conf(config).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.log_level)
    return spark

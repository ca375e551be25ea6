"""PySpark entry points: thin, they build DataFrames from ``mercury.features``.

Each job's ``main`` reads its arguments, then ``start(args.config)`` for the bindings and the
session: the rest is one call into ``mercury``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from mercury.config import Settings


def start(config: str | None) -> tuple[Settings, SparkSession]:
    """The settings (``--config`` names a settings file, else the profile's), their secrets
    (on EMR fetched from Secrets Manager: ``spark_submit.secrets``) and the Spark session
    they describe (``local[2]`` locally; on EMR spark-submit sets the master)."""
    from mercury.features.executors.spark.session import session

    settings = bindings(config)
    return settings, session(settings.spark)


def bindings(config: str | None) -> Settings:
    """The settings and their secrets alone, for a job that needs no Spark session."""
    if config:
        os.environ["MERCURY_CONFIG"] = config
    from mercury.batch import secrets
    from mercury.config import load_settings

    settings = load_settings()
    secrets.into_environment(settings)  # on EMR: the job's secrets, by reference, before use
    return settings

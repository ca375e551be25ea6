"""Which engine builds a training set: DuckDB on one machine, Spark on the cluster.

Both give the same rows (tests hold each to the reference executor). DuckDB needs no JVM and
no shuffle, so it wins wherever the events fit one machine (docs/PERFORMANCE.md, "Training
sets against Feast"); Spark stays the distributed path, on EMR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mercury.config import Settings

ENGINES = ("auto", "spark", "duckdb")


def choose(settings: Settings, requested: str | None = None) -> str:
    """``requested`` (else ``offline.training_engine``); "auto" is DuckDB unless the batch
    jobs are submitted to EMR."""
    engine = requested or settings.offline.training_engine
    if engine not in ENGINES:
        raise ValueError(f"training engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    return "spark" if settings.spark_submit.type != "local" else "duckdb"

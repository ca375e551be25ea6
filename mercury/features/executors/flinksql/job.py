"""The SQL job's graph on a TableEnvironment: settings, functions, views, one statement set.

``build`` knows no connector: the job's ``main`` declares ``raw_<stream>`` (line,
line_position, pt) for every stream of the plan and the sinks (``dlq_<stream>_dlq``,
``staged_validated``, ``staged_late``, ``online_store``) before calling it (see
flink_jobs/online_features.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mercury.config import FlinkConfig
from mercury.features.executors.flinksql.plan import JobPlan
from mercury.features.executors.streaming.dedup import DEDUP_HORIZON_MS

UDF_JAR = Path(__file__).resolve().parents[4] / "infra" / "flink-udf" / "build" / \
    "mercury-flink-udf.jar"

# The job's Java functions (infra/flink-udf) by their SQL name.
JAVA_FUNCTIONS = {"JSON_FIELDS": "JsonFields", "FIELD_JSON": "FieldJson",
                  "AVRO_JSON": "AvroJson"}

SETTINGS = {
    "table.exec.mini-batch.enabled": "true",
    "table.exec.mini-batch.size": "50000",
    # FIELD_JSON takes retractions in one phase only (it has no merge).
    "table.optimizer.agg-phase-strategy": "ONE_PHASE",
    # The default state TTL is the dedup horizon (the deduplicate operators' state); the
    # feature aggregations carry their own, longer TTL as hints (plan.retention_ms).
    "table.exec.state.ttl": f"{DEDUP_HORIZON_MS} ms",
    "python.fn-execution.bundle.size": "20000",
    "python.fn-execution.bundle.time": "100",
    "python.fn-execution.arrow.batch.size": "5000",
}


def udf_jar_url() -> str:
    if not UDF_JAR.exists():
        raise FileNotFoundError(f"{UDF_JAR} is missing: run `make setup` (it builds the job's "
                                "Java function with javac)")
    return UDF_JAR.as_uri()


def register_java_functions(t_env: Any) -> None:
    """The Java functions, once per TableEnvironment (a source view may need one first)."""
    for name, java_class in JAVA_FUNCTIONS.items():
        t_env.execute_sql(f"CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS {name} "
                          f"AS 'com.mercurypay.flink.{java_class}' LANGUAGE JAVA "
                          f"USING JAR '{udf_jar_url()}'")


def configure(t_env: Any, flink: FlinkConfig) -> None:
    """The job's settings, its state backend (RocksDB with incremental checkpoints, or the
    heap) and its mini-batch latency (changes are folded that long before they move down the
    pipeline: one flush for all the aggregation levels)."""
    config = t_env.get_config()
    for key, value in SETTINGS.items():
        config.set(key, value)
    config.set("table.exec.mini-batch.allow-latency", f"{flink.mini_batch_ms} ms")
    config.set("state.backend.type", flink.state_backend)
    config.set("execution.checkpointing.incremental",
               str(flink.state_backend == "rocksdb").lower())


def _computed_once(t_env: Any, sql: str) -> Any:
    """``sql`` through a DataStream and back (all in the JVM): its readers then share one
    copy of it. The processing-time column ``pt`` is taken anew on the way back in.

    It comes back insert-only: with mini-batches on, Flink declares the keep-first
    deduplicate's output as updating although it only ever inserts, and every aggregation
    after it would then keep all its values to take retractions that never come."""
    from pyflink.table import ChangelogMode, Schema
    from pyflink.table.expressions import col

    table = t_env.sql_query(sql)
    columns = [c for c in table.get_schema().get_field_names() if c != "pt"]
    stream = t_env.to_changelog_stream(table.select(*[col(c) for c in columns]))
    return t_env.from_changelog_stream(
        stream, Schema.new_builder().column_by_expression("pt", "PROCTIME()").build(),
        ChangelogMode.insert_only())


def build(t_env: Any, plan: JobPlan, feature_sets_json: str, store_json: str,
          settings_json: str | None = None) -> Any:
    """Views and INSERTs of ``plan`` on ``t_env``; returns the statement set to execute.
    ``settings_json``: the platform's settings, for the writer's tombstone check (without
    them, as in tests on literal rows, erased users are not looked up)."""
    from mercury.features.executors.flinksql.udfs import functions

    register_java_functions(t_env)
    for name, function in functions(feature_sets_json, store_json, settings_json).items():
        t_env.create_temporary_system_function(name, function)
    for view in plan.views():
        if view.shared:
            t_env.create_temporary_view(view.name, _computed_once(t_env, view.sql))
        else:
            t_env.execute_sql(view.text())
    statements = t_env.create_statement_set()
    for insert in plan.inserts():
        statements.add_insert_sql(insert.sql)
    return statements

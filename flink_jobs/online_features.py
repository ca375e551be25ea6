"""Online features: the registry's streams -> validated, deduplicated features in Redis.

    python -m flink_jobs.online_features --config /abs/path/mercury.yaml \\
        [--feature-sets spending.v1,declines.v1] [--job-name NAME] [--parallelism N] \\
        [--engine sql|python]

``main`` only declares connectors from configuration. Two engines run the same compiled specs
(``mercury features compile``, never the Python that defined them):

- ``sql``: Flink SQL compiled from the specs (``mercury.features.executors.flinksql``;
  ``mercury features explain --engine flink`` prints it); Python only validates what the SQL
  check leaves and writes aggregated changes in batches. Stop it with a savepoint: a cancel
  while its writer is busy takes the TaskManager down (docs/STREAMING.md, "Known limits").
- ``python`` (the default for now): per-event Python operators
  (``mercury.features.executors.streaming.flink``); also the one that takes over a
  warm-started version.

Connectors by ``event_log.type`` (docs/STREAMING.md, "Sources by binding"); on Kafka
(``kafka_tables``, SQL engine only) each stream's topic, Avro decoded in the JVM, and its
dead-letter topic. The local defaults:
- sources: one filesystem table per stream over the event log folder, format ``raw`` (one row
  per line), new files picked up every second; a line's position is its file and line number.
- dead letters: each stream's ``<stream>.dlq`` folder of the event log (same format as any
  stream, so the replay command reads them back).
- validated and late events: part files under ``<data_dir>/lake_staging/{validated,late}``,
  committed by checkpoints; ``mercury lake-compact`` commits them to Iceberg.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import cast

# Where configure() leaves the checkpoint interval, for the part-file tables to roll as often.
CHECKPOINT_INTERVAL_KEY = "execution.checkpointing.interval"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flink_jobs.online_features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="absolute path of a mercury settings file")
    parser.add_argument("--feature-sets", default="",
                        help="comma-separated NAME.vN (default: every compiled feature set)")
    parser.add_argument("--warm-start", default="",
                        help="comma-separated NAME.vN that take over from their warm start "
                             "(mercury features warm-start) at its cut")
    parser.add_argument("--engine", choices=("sql", "python"), default="sql",
                        help="sql: Flink SQL compiled from the specs (the default); python: "
                             "the per-event Python operators (needed for --warm-start; their "
                             "state does not carry over to the other engine)")
    parser.add_argument("--job-name", default="mercury-online-features")
    parser.add_argument("--parallelism", type=int, default=None)
    return parser.parse_args(argv)


def configure(env, t_env, args, settings) -> None:
    from pyflink.datastream import CheckpointingMode

    interval_ms = settings.flink.checkpoint_interval_ms
    env.enable_checkpointing(interval_ms, CheckpointingMode.EXACTLY_ONCE)
    env.set_parallelism(args.parallelism or settings.flink.default_parallelism)
    config = t_env.get_config()
    config.set(CHECKPOINT_INTERVAL_KEY, f"{interval_ms} ms")
    config.set("pipeline.name", args.job_name)
    # Latency over batching: a Python bundle waits at most 50 ms, network buffers 20 ms.
    config.set("python.fn-execution.bundle.time", "50")
    config.set("python.fn-execution.bundle.size", "2000")
    config.set("execution.buffer-timeout", "20 ms")
    # Each user's state stays in the Python worker between events.
    config.set("python.state.cache-size", "50000")
    # Line numbers are counted per file; a file is read in seconds, so a day is plenty.
    config.set("table.exec.state.ttl", "1 d")
    # A cancelled job keeps its last checkpoints, so a redeploy restores from them.
    config.set("execution.checkpointing.externalized-checkpoint-retention",
               "RETAIN_ON_CANCELLATION")
    config.set("restart-strategy.type", "fixed-delay")
    config.set("restart-strategy.fixed-delay.attempts", "1000")
    config.set("restart-strategy.fixed-delay.delay", "2 s")


def _line_table(t_env, table: str, folder: str, discovery_ms: int) -> None:
    """One row per line of the files in ``folder`` (raw), with its file; new files are picked
    up every ``discovery_ms``."""
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE {table} (
            line STRING,
            path STRING METADATA FROM 'file.path' VIRTUAL,
            pt AS PROCTIME()
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{folder}',
            'format' = 'raw',
            'source.monitor-interval' = '{discovery_ms} ms'
        )""")


def sql_sources(t_env, streams, event_log_root: str, discovery_ms: int) -> None:
    """``raw_<stream>`` (line, line_position, pt) over each stream's event-log folder."""
    from mercury.features.executors.flinksql.plan import table_name

    for stream in streams:
        name = table_name(stream)
        folder = os.path.join(event_log_root, stream)
        os.makedirs(folder, exist_ok=True)
        _line_table(t_env, f"src_{name}", folder, discovery_ms)
        # A line's position is its file and number (one reader per file, in file order).
        t_env.execute_sql(f"""
            CREATE TEMPORARY VIEW raw_{name} AS
            SELECT line, '{stream}/' || REGEXP_EXTRACT(path, '[^/]+$', 0) || ':' || CAST(
                     COUNT(*) OVER (PARTITION BY path ORDER BY pt
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                   AS STRING) AS line_position, pt
            FROM src_{name}""")


def sql_sinks(t_env, streams, event_log_root: str, staging: str) -> None:
    """Dead letters per stream in the event log's folders, then the common sinks."""
    from mercury.contracts import registry
    from mercury.features.executors.flinksql.plan import table_name

    for s in streams:
        dead_letters = str(registry.stream(s).dead_letter_stream)
        _part_file_table(t_env, f"dlq_{table_name(dead_letters)}",
                         os.path.join(event_log_root, dead_letters))
    common_sinks(t_env, staging)


def common_sinks(t_env, staging: str) -> None:
    """The lake's staging folders and the online store's writer: the same for every binding."""
    _part_file_table(t_env, "staged_validated", os.path.join(staging, "validated"))
    _part_file_table(t_env, "staged_late", os.path.join(staging, "late"))
    t_env.execute_sql("CREATE TEMPORARY TABLE online_store (batch_writes BIGINT) "
                      "WITH ('connector' = 'blackhole')")


def _part_file_table(t_env, table: str, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    # Part files are committed (renamed from a hidden name) at the checkpoint after they
    # roll; a row format rolls on time only (not on checkpoints), so roll them as often.
    interval = t_env.get_config().get(CHECKPOINT_INTERVAL_KEY, "5 s")
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE {table} (line STRING) WITH (
            'connector' = 'filesystem', 'path' = 'file://{folder}', 'format' = 'raw',
            'sink.rolling-policy.rollover-interval' = '{interval}',
            'sink.rolling-policy.inactivity-interval' = '{interval}',
            'sink.rolling-policy.check-interval' = '1 s')""")


def kafka_tables(t_env, streams, cfg, staging: str) -> None:
    """Production: each stream's topic (``raw_<stream>``, Avro decoded in the JVM against the
    registry's writer schemas) and its dead-letter topic; the common sinks as locally. Needs
    the Kafka SQL connector jar in the cluster's lib/ (docs/STREAMING.md, "Sources by
    binding")."""
    from mercury.contracts import registry
    from mercury.eventlog import flink_kafka
    from mercury.eventlog.factory import kafka_credentials
    from mercury.eventlog.schema_registry import schema_registry
    from mercury.features.executors.flinksql.job import register_java_functions
    from mercury.features.executors.flinksql.plan import table_name

    register_java_functions(t_env)  # the source views decode with AVRO_JSON
    client = flink_kafka.client_options(cfg, *kafka_credentials(cfg))
    schemas_json = flink_kafka.writer_schemas_json(
        schema_registry(cfg.schema_registry_url).registered_id, streams) \
        if cfg.serialization == "avro" else "{}"
    for stream in streams:
        name = table_name(stream)
        t_env.execute_sql(flink_kafka.source_ddl(f"src_{name}", stream, client))
        t_env.execute_sql(flink_kafka.raw_view_sql(f"raw_{name}", f"src_{name}", stream, cfg,
                                                   schemas_json))
        dead_letters = str(registry.stream(stream).dead_letter_stream)
        t_env.execute_sql(flink_kafka.dead_letter_sink_ddl(f"dlq_{table_name(dead_letters)}",
                                                           dead_letters, client))
    common_sinks(t_env, staging)


def line_sources(t_env, streams, event_log_root: str, discovery_ms: int):
    """One raw-line table per stream, unioned, with each line's file and number."""
    selects = []
    for i, stream in enumerate(streams):
        folder = os.path.join(event_log_root, stream)
        os.makedirs(folder, exist_ok=True)
        _line_table(t_env, f"src_{i}", folder, discovery_ms)
        # Rows of one file reach the counter in file order (one reader per file, one channel).
        selects.append(f"""
            SELECT '{stream}' AS `stream`, line, path,
                   COUNT(*) OVER (PARTITION BY path ORDER BY pt
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS line_number
            FROM src_{i}""")
    return t_env.sql_query(" UNION ALL ".join(selects))


def file_sink(folder: str):
    """JSON lines under ``folder``, committed (renamed from a hidden name) at each checkpoint."""
    from pyflink.common.serialization import Encoder
    from pyflink.datastream.connectors.file_system import (
        BucketAssigner,
        FileSink,
        OutputFileConfig,
        RollingPolicy,
    )

    os.makedirs(folder, exist_ok=True)
    return FileSink.for_row_format(folder, Encoder.simple_string_encoder()) \
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner()) \
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy()) \
        .with_output_file_config(OutputFileConfig.builder().with_part_prefix("part")
                                 .with_part_suffix(".jsonl").build()) \
        .build()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ["MERCURY_CONFIG"] = args.config
    if args.engine == "sql" and args.warm_start:
        raise SystemExit("--warm-start needs --engine python: the SQL engine does not take a "
                         "version over from its backfill yet")

    import orjson
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from mercury.config import FileEventLogConfig, load_settings
    from mercury.features.definition import dsl
    from mercury.features.definition.compile import load_compiled

    settings = load_settings()
    names = [n for n in args.feature_sets.split(",") if n] or None
    feature_sets = load_compiled(names)
    specs_json = orjson.dumps([dsl.to_dict(fs) for fs in feature_sets]).decode()
    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env)
    configure(env, t_env, args, settings)
    staging = str((settings.data_dir / "lake_staging").resolve())
    if args.engine == "sql":
        run_sql(t_env, settings, feature_sets, specs_json, staging)
        return
    if not isinstance(settings.event_log, FileEventLogConfig):
        raise SystemExit("--engine python reads the file event log only; use --engine sql")
    event_log = settings.event_log
    run_python(env, t_env, args, settings, feature_sets, specs_json,
               str(event_log.root.resolve()), event_log.discovery_interval_ms, staging)


def run_sql(t_env, settings, feature_sets, specs_json: str, staging: str) -> None:
    from mercury.config import FileEventLogConfig
    from mercury.features.executors.flinksql import job
    from mercury.features.executors.flinksql.plan import compile_job

    plan = compile_job(feature_sets)
    job.configure(t_env, settings.flink)
    event_log = settings.event_log
    if isinstance(event_log, FileEventLogConfig):
        root = str(event_log.root.resolve())
        sql_sources(t_env, plan.streams, root, event_log.discovery_interval_ms)
        sql_sinks(t_env, plan.streams, root, staging)
    else:
        kafka_tables(t_env, plan.streams, event_log, staging)
    job.build(t_env, plan, specs_json, settings.online_store.model_dump_json(),
              settings.model_dump_json()).execute()


def run_python(env, t_env, args: argparse.Namespace, settings, feature_sets, specs_json: str,
               root: str, discovery_ms: int, staging: str) -> None:
    from pyflink.common import Types

    from mercury.contracts import registry
    from mercury.features.executors.streaming.flink import LINE, build

    streams = sorted({fs.source.stream for fs in feature_sets})
    lines = t_env.to_data_stream(line_sources(t_env, streams, root, discovery_ms)) \
        .map(lambda r: r, output_type=LINE)
    dead_letters, validated, late = build(
        lines, specs_json, settings.online_store.model_dump_json(),
        warm_start_refs=[ref for ref in args.warm_start.split(",") if ref])

    for stream in streams:
        # Every source stream has its dead-letter stream (the registry's check).
        dlq_folder = os.path.join(root, cast(str, registry.stream(stream).dead_letter_stream))
        dead_letters.filter(lambda row, s=stream: row.stream == s) \
            .map(lambda row: row.json, output_type=Types.STRING()) \
            .sink_to(file_sink(dlq_folder)).name(f"dead-letters-{stream}")
    validated.map(lambda row: row.json, output_type=Types.STRING()) \
        .sink_to(file_sink(os.path.join(staging, "validated"))).name("lake-validated")
    late.map(lambda row: row.json, output_type=Types.STRING()) \
        .sink_to(file_sink(os.path.join(staging, "late"))).name("lake-late-events")
    env.execute_async(args.job_name)


if __name__ == "__main__":
    main()

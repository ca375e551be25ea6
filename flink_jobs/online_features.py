"""Online features: the registry's streams -> validated, deduplicated features in Redis.

    python -m flink_jobs.online_features --config /abs/path/mercury.yaml \\
        [--feature-sets spending.v1,declines.v1] [--job-name NAME] [--parallelism N]

``main`` only declares connectors from configuration; the graph is
``mercury.features.executors.streaming.flink.build`` and the feature logic lives in
``mercury.features.executors.streaming.executor``. Feature sets are loaded from their compiled JSON
(``mercury features compile``), never from the Python that defined them.

Connectors, local defaults (production swaps the event-log folders for Kafka topics):
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

CHECKPOINT_INTERVAL = "5 s"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flink_jobs.online_features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="absolute path of a mercury settings file")
    parser.add_argument("--feature-sets", default="",
                        help="comma-separated NAME.vN (default: every compiled feature set)")
    parser.add_argument("--warm-start", default="",
                        help="comma-separated NAME.vN that take over from their warm start "
                             "(mercury features warm-start) at its cut")
    parser.add_argument("--job-name", default="mercury-online-features")
    parser.add_argument("--parallelism", type=int, default=None)
    return parser.parse_args(argv)


def configure(env, t_env, args, settings) -> None:
    from pyflink.datastream import CheckpointingMode

    env.enable_checkpointing(5_000, CheckpointingMode.EXACTLY_ONCE)
    env.set_parallelism(args.parallelism or settings.flink.default_parallelism)
    config = t_env.get_config()
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


def line_sources(t_env, streams, event_log_root: str):
    """One raw-line table per stream, unioned, with each line's file and number."""
    selects = []
    for i, stream in enumerate(streams):
        folder = os.path.join(event_log_root, stream)
        os.makedirs(folder, exist_ok=True)
        t_env.execute_sql(f"""
            CREATE TEMPORARY TABLE src_{i} (
                line STRING,
                path STRING METADATA FROM 'file.path' VIRTUAL,
                pt AS PROCTIME()
            ) WITH (
                'connector' = 'filesystem',
                'path' = 'file://{folder}',
                'format' = 'raw',
                'source.monitor-interval' = '1 s'
            )""")
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

    import orjson
    from pyflink.common import Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from mercury.config import FileEventLogConfig, load_settings
    from mercury.contracts import registry
    from mercury.features.definition import dsl
    from mercury.features.definition.compile import load_compiled
    from mercury.features.executors.streaming.flink import LINE, build

    settings = load_settings()
    names = [n for n in args.feature_sets.split(",") if n] or None
    feature_sets = load_compiled(names)
    streams = sorted({fs.source.stream for fs in feature_sets})

    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env)
    configure(env, t_env, args, settings)

    # The job reads the local (file) event log.
    root = str(cast(FileEventLogConfig, settings.event_log).root.resolve())
    lines = t_env.to_data_stream(line_sources(t_env, streams, root)) \
        .map(lambda r: r, output_type=LINE)
    dead_letters, validated, late = build(
        lines, orjson.dumps([dsl.to_dict(fs) for fs in feature_sets]).decode(),
        settings.online_store.model_dump_json(),
        warm_start_refs=[ref for ref in args.warm_start.split(",") if ref])

    for stream in streams:
        # Every source stream has its dead-letter stream (the registry's check).
        dlq_folder = os.path.join(root, cast(str, registry.stream(stream).dead_letter_stream))
        dead_letters.filter(lambda row, s=stream: row.stream == s) \
            .map(lambda row: row.json, output_type=Types.STRING()) \
            .sink_to(file_sink(dlq_folder)).name(f"dead-letters-{stream}")
    staging = str((settings.data_dir / "lake_staging").resolve())
    validated.map(lambda row: row.json, output_type=Types.STRING()) \
        .sink_to(file_sink(os.path.join(staging, "validated"))).name("lake-validated")
    late.map(lambda row: row.json, output_type=Types.STRING()) \
        .sink_to(file_sink(os.path.join(staging, "late"))).name("lake-late-events")
    env.execute_async(args.job_name)


if __name__ == "__main__":
    main()

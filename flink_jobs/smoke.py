"""Smoke job: counts events per type in 10-second tumbling windows of event time.

It proves the submission path end to end (REST upload, PythonDriver, the Flink env's python,
the filesystem source over the local event log) while doing as little as possible.

    python -m flink_jobs.smoke --events <folder of newline-delimited JSON files>
"""

from __future__ import annotations

import argparse
import sys

WINDOW_SECONDS = 10


def build(t_env, events):
    """events(event_id, event_type, event_time rowtime) -> (window_start, window_end,
    event_type, events). Pure: no connectors, so it runs the same on literal rows."""
    return t_env.sql_query(f"""
        SELECT window_start, window_end, event_type, COUNT(*) AS events
        FROM TABLE(TUMBLE(TABLE {events}, DESCRIPTOR(event_time),
                          INTERVAL '{WINDOW_SECONDS}' SECOND))
        GROUP BY window_start, window_end, event_type
    """)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flink_jobs.smoke", description=__doc__)
    parser.add_argument("--events", required=True,
                        help="absolute path of the event-log folder (one stream) to follow")
    parser.add_argument("--job-name", default="mercury-smoke")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    args = parse_args(sys.argv[1:] if argv is None else argv)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("pipeline.name", args.job_name)
    # Checkpoints commit sources' positions; the smoke run checks they complete.
    t_env.get_config().set("execution.checkpointing.interval", "5 s")
    # The local event log: newline-delimited JSON files, written under a hidden name and then
    # renamed (Flink skips names starting with '.' or '_'); new files are picked up every second.
    # event_ts is epoch milliseconds, as in the Avro contracts.
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE events (
            event_id STRING,
            event_type STRING,
            event_ts BIGINT,
            event_time AS TO_TIMESTAMP_LTZ(event_ts, 3),
            WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{args.events}',
            'format' = 'json',
            'source.monitor-interval' = '1 s'
        )
    """)
    t_env.execute_sql("""
        CREATE TEMPORARY TABLE counts (
            window_start TIMESTAMP(3),
            window_end TIMESTAMP(3),
            event_type STRING,
            events BIGINT
        ) WITH ('connector' = 'print')
    """)
    # Returns once the job is submitted: the job is unbounded and runs until cancelled.
    build(t_env, t_env.from_path("events")).execute_insert("counts")


if __name__ == "__main__":
    main()

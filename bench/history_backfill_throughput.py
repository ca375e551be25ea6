"""Throughput of the feature history backfill (``mercury.features.offline.history.backfill``) on a
generated lake (a measurement, not a job).

    python bench/history_backfill_throughput.py --events 200000 --users 5000 \\
        [--feature-set spending.v1] [--workdir /tmp/history]

Generates the event log, validates the set's stream into the lake, then backfills every day
the stream covers, twice: ``--full`` from nothing, then an incremental run with nothing new
(which must compute 0 days). Prints events, days, rows, seconds and events/s per core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/history_backfill_throughput.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--feature-set", default="spending.v1")
    parser.add_argument("--workdir", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from mercury.config import load_settings
    from mercury.features.definition.compile import load_one
    from mercury.features.executors.spark.session import session, spark_config
    from mercury.features.offline import history
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from mercury.lake import tables
    from mercury.lake.load import load_stream
    from tests.conftest import write_config

    work = Path(args.workdir or tempfile.mkdtemp(prefix="history_throughput_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MERCURY_CONFIG"] = str(write_config(work))
    settings = load_settings()
    fs = load_one(args.feature_set)
    print(f"... generate {args.events:,} events, load {fs.source.stream} into the lake",
          flush=True)
    generate(settings, Knobs(events=args.events, users=args.users), with_postgres=False,
             show_progress=False)
    load_stream(settings, fs.source.stream)
    lake = tables.read(settings, fs.source.stream)
    times = [t.timestamp() * 1000 for t in lake[tables.ARRIVAL_FIELD].to_pylist()]
    start, end = history.day_of(int(min(times))), history.day_of(int(max(times)))
    spark = session(spark_config(settings))
    # local[N] runs N task threads; on a cluster, the executors' cores.
    master = spark.sparkContext.master
    cores = int(master[6:-1]) if master.startswith("local[") and master[6:-1].isdigit() \
        else spark.sparkContext.defaultParallelism
    runs = {}
    for name, full in (("full", True), ("incremental, nothing new", False)):
        started = time.perf_counter()
        result = history.backfill(spark, settings, fs, start, end, full=full,
                                  progress=lambda line: print(f"    {line}", flush=True))
        seconds = time.perf_counter() - started
        runs[name] = {"days_written": result.days_written, "rows": result.rows_written,
                      "seconds": round(seconds, 1)}
        print(f"{name:26} {result.days_written:>3} days {result.rows_written:>9,} rows "
              f"{seconds:7.1f} s", flush=True)
    spark.stop()
    full = runs["full"]
    summary = {"feature_set": fs.ref, "lake_events": lake.num_rows, "days": full["days_written"],
               "cores": cores, "events_per_s_per_core":
                   round(lake.num_rows / full["seconds"] / cores),
               "entity_days_per_s": round(full["rows"] / full["seconds"]),
               "runs": runs, "load_average": os.getloadavg()}
    print(json.dumps(summary, indent=2))
    out = REPO / "bench" / "results" / f"history_backfill_{fs.ref}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0 if runs["incremental, nothing new"]["days_written"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Throughput of the Spark point-in-time executor on a generated stream (a measurement, not a
job): every compiled set, query rows for every entity at a few as-of times.

    python bench/spark_point_in_time_throughput.py --events 200000 --users 5000 \\
        [--times 3] [--workdir /tmp/pit]

Prints, per set and in total, events normalised (Python) and computed (Spark), query rows,
and rates. Spark's part is forced to completion with the ``noop`` sink (no output written).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/spark_point_in_time_throughput.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--times", type=int, default=3, help="as-of times per entity")
    parser.add_argument("--workdir", default=None, help="where the generated stream goes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from mercury.config import load_settings
    from mercury.contracts import registry
    from mercury.durations import DAY_MS
    from mercury.eventlog.file_log import FileEventReader
    from mercury.features.definition.compile import load_compiled
    from mercury.features.executors.reference import valid_record
    from mercury.features.executors.spark import executor as sx
    from mercury.features.executors.spark.session import session, spark_config
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from tests.conftest import write_config

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pit_throughput_"))
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work)  # every data path inside the work folder
    os.environ["MERCURY_CONFIG"] = str(config)
    settings = load_settings()
    generate(settings, Knobs(events=args.events, users=args.users), with_postgres=False,
             show_progress=False)
    reader = FileEventReader(settings.event_log.root)
    sets = [fs for fs in load_compiled() if registry.stream(fs.source.stream).event_id_field]
    records: dict[str, list[dict]] = {}
    for stream in sorted({fs.source.stream for fs in sets}):
        records[stream] = [r for m in reader.read(stream)
                           if (r := valid_record(stream, m.value)) is not None]

    spark = session(spark_config(settings))
    total = {"events": 0, "queries": 0, "python_s": 0.0, "spark_s": 0.0}
    for fs in sets:
        started = time.perf_counter()
        table = sx.events_table(fs, records[fs.source.stream])
        python_s = time.perf_counter() - started
        entities = sorted(set(table["entity_id"].to_pylist()))
        newest = max(table["arrival_ts"].to_pylist())
        times = [newest - k * DAY_MS for k in range(args.times)]
        queries = [(f"{e}@{t}", e, t) for t in times for e in entities]
        started = time.perf_counter()
        events = spark.createDataFrame(table)
        frame = spark.createDataFrame(queries, "query_id string, entity_id string, "
                                               "as_of_ms long")
        sx.point_in_time(fs, events, frame).write.format("noop").mode("overwrite").save()
        spark_s = time.perf_counter() - started
        print(f"{fs.ref:16} {table.num_rows:>9,} events {len(queries):>8,} query rows  "
              f"normalise {python_s:6.1f} s  spark {spark_s:6.1f} s  "
              f"{table.num_rows / spark_s:>9,.0f} events/s  {len(queries) / spark_s:>8,.0f} "
              "rows/s")
        total["events"] += table.num_rows
        total["queries"] += len(queries)
        total["python_s"] += python_s
        total["spark_s"] += spark_s
    print(f"{'total':16} {total['events']:>9,} events {total['queries']:>8,} query rows  "
          f"normalise {total['python_s']:6.1f} s  spark {total['spark_s']:6.1f} s  "
          f"{total['events'] / total['spark_s']:>9,.0f} events/s  "
          f"{total['queries'] / total['spark_s']:>8,.0f} rows/s")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

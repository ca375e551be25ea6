"""The PyFlink online-features job on N adversarial events: throughput per slot and exactness.

Generates N events (default 1,000,000; the generator's default anomalies: 5% duplicates, 10%
out of order by up to 10 minutes, 2% late by 1 h to 3 days, 1% malformed, 3% with unknown new
fields), runs the job at parallelism 1 (one task slot) on the local cluster into its own
Redis database, times it from submission until it has caught up, then holds every user's
values to the reference executor at four request times.

The peer here is the reference executor (plain Python over the same events), so the ratio
printed is what Flink's incremental tiles cost or save against recomputing from raw events.

    .venv/bin/python bench/online_features_exactness.py [--events 1000000]
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

REDIS_DB = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    args = parser.parse_args()

    from tests.conftest import write_config

    work = Path(tempfile.mkdtemp(prefix="bench-online-"))
    config = write_config(work, online_store={"db": REDIS_DB})
    os.environ["MERCURY_CONFIG"] = str(config)

    import redis

    from mercury.config import load_settings
    from mercury.durations import DAY_MS
    from mercury.eventlog.file_log import FileEventReader
    from mercury.features.definition.compile import load_compiled
    from mercury.features.executors.agreement import arrivals_from_log, compare, last_arrival
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from mercury.online.factory import open_store
    from mercury.ops import online_job
    from mercury.ops.flink_rest import FlinkRestClient

    settings = load_settings()
    redis.Redis(port=settings.online_store.port, db=REDIS_DB).flushdb()
    print(f"generating {args.events:,} events into {work}", flush=True)
    generate(settings, Knobs(events=args.events, users=args.users), with_postgres=False)
    sets = load_compiled()
    streams = sorted({fs.source.stream for fs in sets})
    reader = FileEventReader(settings.event_log.root)
    lines = sum(reader.count(s) for s in streams)

    client = FlinkRestClient(settings.flink.rest_url)
    started = time.perf_counter()
    job_id = online_job.submit(client, config, "bench-online-features")
    running = time.perf_counter()
    try:
        last_print = [0.0]

        def report(p):
            if time.perf_counter() - last_print[0] > 5:
                last_print[0] = time.perf_counter()
                print(f"  {p.lines_read:,}/{lines:,} lines "
                      f"({p.lines_read / max(1e-9, time.perf_counter() - running):,.0f}/s)",
                      flush=True)

        online_job.wait_caught_up(client, job_id, lines, timeout_s=3600, report=report)
        caught_up = time.perf_counter()
    finally:
        client.cancel(job_id)
    flink_s = caught_up - running

    arrivals = arrivals_from_log(reader, streams)
    end = last_arrival(arrivals)
    t0 = time.perf_counter()
    result = compare(sets, open_store(settings), arrivals,
                     [end, end + 30 * 60_000, end + DAY_MS + 1, end + 8 * DAY_MS])
    oracle_s = (time.perf_counter() - t0) / 4  # four request times, each from scratch
    redis.Redis(port=settings.online_store.port, db=REDIS_DB).flushdb()

    out = {"events": args.events, "lines": lines, "parallelism": 1,
           "submit_to_running_s": round(running - started, 1),
           "flink_catch_up_s": round(flink_s, 1),
           "lines_per_s_per_slot": round(lines / flink_s),
           "reference_s_per_as_of": round(oracle_s, 1),
           "values_compared": result.values, "entity_sets": result.entities,
           "mismatches": len(result.mismatches)}
    print(json.dumps(out, indent=2))
    print(result.summary())
    print(f"Flink {out['lines_per_s_per_slot']:,} lines/s on one slot; the oracle recomputing "
          f"one request time from raw events takes {oracle_s:.0f} s "
          f"(ratio {flink_s / oracle_s:.2f}x of Flink's catch-up time)")
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "online_features_exactness.json").write_text(
        json.dumps(out, indent=2) + "\n")
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()

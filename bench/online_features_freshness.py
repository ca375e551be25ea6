"""Freshness: an event written to the event log -> its value visible in Redis, at a steady rate.

Starts the online-features job on an empty event log, then for ``--seconds`` writes
``--rate`` transactions per second as small files (one every ``--tick-ms``; a file becomes
visible to Flink when it is renamed into place, which is when the clock starts). Each event is
an AUTH for a user never seen before, so "visible" is unambiguous: the user's ``purchases``
hash exists. A poller checks every pending user every 10 ms. Prints p50/p95/p99.

The local event log is polled by Flink's file source every second (`source.monitor-interval`),
which alone adds 0..1 s; Kafka in production pushes records within milliseconds.

The first ``--warmup-s`` seconds of traffic are written but not counted (the job's Python
workers start on the first records).

    .venv/bin/python bench/online_features_freshness.py [--rate 200] [--seconds 60] \
        [--engine sql|python] [--out online_features_freshness.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REDIS_DB = 9


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=200, help="events per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--tick-ms", type=int, default=100)
    parser.add_argument("--warmup-s", type=int, default=20)
    parser.add_argument("--engine", choices=("sql", "python"), default="sql")
    parser.add_argument("--out", default="online_features_freshness.json")
    args = parser.parse_args()

    from tests.conftest import write_config

    work = Path(tempfile.mkdtemp(prefix="bench-fresh-"))
    config = write_config(work, online_store={"db": REDIS_DB})
    os.environ["MERCURY_CONFIG"] = str(config)

    import orjson
    import redis

    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventProducer
    from mercury.features.definition.compile import load_compiled
    from mercury.monitoring.probe import canary_record
    from mercury.online import layout
    from mercury.ops import online_job
    from mercury.ops.flink_rest import FlinkRestClient

    settings = load_settings()
    r = redis.Redis(port=settings.online_store.port, db=REDIS_DB)
    r.flushdb()
    purchases = next(fs for fs in load_compiled() if fs.name == "purchases")
    client = FlinkRestClient(settings.flink.rest_url)
    job_id = online_job.submit(client, config, "bench-freshness", feature_sets="purchases.v1",
                               engine=args.engine)
    time.sleep(3)  # let the sources list the (empty) folders once

    pending: dict[str, float] = {}
    latencies: list[float] = []
    counted_from = time.monotonic() + args.warmup_s
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()

    def poll() -> None:
        while writing.is_set() or pending:
            with lock:
                users = list(pending)
            if users:
                pipe = r.pipeline(transaction=False)
                for user in users:
                    pipe.exists(layout.entity_key(purchases, user))
                seen_at = time.monotonic()
                for user, exists in zip(users, pipe.execute(), strict=True):
                    if exists:
                        with lock:
                            written = pending.pop(user)
                            if written >= counted_from:
                                latencies.append(seen_at - written)
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    producer = FileEventProducer(settings.event_log.root, writer_id="fresh",
                                 batch_size=10**9, fsync=False)
    per_tick = max(1, args.rate * args.tick_ms // 1000)
    n = 0
    end = counted_from + args.seconds
    try:
        while time.monotonic() < end:
            tick = time.monotonic()
            users = [f"usr_fresh_{n + i:08d}" for i in range(per_tick)]
            now_ms = int(time.time() * 1000)
            for user in users:
                producer.send("transactions", orjson.dumps(canary_record(user, now_ms)))
            producer.flush()  # renamed into place: visible to Flink from now
            written = time.monotonic()
            with lock:
                pending.update({user: written for user in users})
            n += per_tick
            time.sleep(max(0.0, args.tick_ms / 1000 - (time.monotonic() - tick)))
        writing.clear()
        poller.join(timeout=30)
    finally:
        # the SQL job is stopped, not cancelled (docs/STREAMING.md, "Known limits")
        if args.engine == "sql":
            client.stop_with_savepoint(job_id)
        else:
            client.cancel(job_id)
        r.flushdb()
    ms = [x * 1000 for x in latencies]
    out = {"engine": args.engine, "rate_per_s": args.rate, "seconds": args.seconds,
           "warmup_s": args.warmup_s, "events": n, "load_average": os.getloadavg(),
           "visible": len(ms), "never_visible_within_30s": len(pending),
           "p50_ms": round(percentile(ms, 0.50)), "p95_ms": round(percentile(ms, 0.95)),
           "p99_ms": round(percentile(ms, 0.99)), "max_ms": round(max(ms))}
    print(json.dumps(out, indent=2))
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / args.out).write_text(
        json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

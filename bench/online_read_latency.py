"""Online read latency: ``ContextReader.context`` over 1,000,000 users in the local Redis.

1. Real hashes: a generated world (default anomaly mix) runs through ``OnlineExecutor`` into
   Redis db 14 for a few hundred template users (every compiled feature set).
2. Clone: each template's hashes are DUMPed once and RESTOREd under new user ids, pipelined in
   batches, until there are ``--users`` users; the templates themselves are then removed.
3. Measure, for ``--samples`` random users, the whole ``ContextReader.context`` call (one
   pipelined round trip plus decoding of every window), and the raw round trip alone (the
   same pipeline of HGETALLs, no decoding), so the decode cost is visible. Memory per user is
   the growth of INFO ``used_memory`` over the clone divided by the users cloned.

Db 14 is flushed first and at the end, so a million users do not stay in memory. Results go to
``bench/results/online_read_latency.json``.
Usage: python bench/online_read_latency.py [--users 1000000] [--samples 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mercury.contracts import registry  # noqa: E402
from mercury.contracts.validation import validator  # noqa: E402
from mercury.features.definition.compile import load_compiled  # noqa: E402
from mercury.features.executors.streaming.executor import DictState, OnlineExecutor  # noqa: E402
from mercury.features.reader import ContextReader  # noqa: E402
from mercury.online import layout  # noqa: E402
from mercury.online.redis_store import RedisOnlineStore  # noqa: E402

DB = 14
STREAMS = ("transactions", "user_activity", "risk_signals")
RESULTS = REPO / "bench" / "results" / "online_read_latency.json"


def build_templates(store, feature_sets, templates: int, events: int, seed: int):
    """Real hashes from the executor over a generated world; returns (user ids, newest ms)."""
    from mercury.eventlog.file_log import FileEventProducer, FileEventReader
    from mercury.generator.knobs import Knobs
    from mercury.generator.traffic import TrafficGenerator

    root = Path(tempfile.mkdtemp(prefix="online_bench_"))
    try:
        TrafficGenerator(Knobs(events=events, users=templates, seed=seed),
                         FileEventProducer(root, "bench", fsync=False)).run()
        executor, states, newest, pending = OnlineExecutor(feature_sets), {}, 0, []
        reader = FileEventReader(root)
        for stream in STREAMS:
            check = validator(registry.stream(stream).schema_subject)
            for message in reader.read(stream):
                verdict = check.validate_bytes(message.value)
                if not verdict.ok:
                    continue
                newest = max(newest, verdict.record.get("ingest_ts") or 0)
                for key, _ in executor.route(stream, verdict.record):
                    state = states.setdefault(key, DictState())
                    pending += executor.process(key, stream, verdict.record, state).writes
                if len(pending) > 1000:
                    store.write(pending)
                    pending = []
        # The generator writes profiles to Postgres, not to the log: one CDC create per user,
        # so every template has its profile hash as in production.
        users_seen = sorted({key.partition(":")[2] for key in states})
        for i, user in enumerate(users_seen):
            record = profile_create(user, lsn=1_000 + i, ts_ms=newest)
            for key, _ in executor.route("user_profile_cdc", record):
                state = states.setdefault(key, DictState())
                pending += executor.process(key, "user_profile_cdc", record, state).writes
        store.write(pending)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    users = sorted(key.partition(":")[2] for key in states)
    return users, newest


def profile_create(user_id: str, lsn: int, ts_ms: int) -> dict:
    row = {"user_id": user_id, "full_name": "Bench Person", "email": "bench@example.com",
           "locale": "en-GB", "home_country": "GB", "risk_tier": "LOW",
           "kyc_status": "VERIFIED", "notification_prefs": {"push": True, "email": False},
           "updated_at": ts_ms}
    return {"before": None, "after": row, "op": "c",
            "source": {"connector": "postgresql", "db": "mercury", "schema": "mercury",
                       "table": "user_profiles", "lsn": lsn, "tx_id": lsn, "ts_ms": ts_ms},
            "ts_ms": ts_ms}


def dump_templates(client, feature_sets, users):
    """For each template user, [(feature set, DUMP payload)] of the hashes it has."""
    pipe = client.pipeline(transaction=False)
    wanted = [(user, fs) for user in users for fs in feature_sets]
    for user, fs in wanted:
        pipe.dump(layout.entity_key(fs, user))
    dumps: dict[str, list] = {user: [] for user in users}
    for (user, fs), payload in zip(wanted, pipe.execute(), strict=True):
        if payload is not None:
            dumps[user].append((fs, payload))
    return [d for d in dumps.values() if d]


def clone(client, feature_sets, templates, users: int, batch: int = 1000) -> float:
    """RESTORE the templates' hashes under ``users`` new ids, round robin; returns seconds."""
    ttl = {fs.name: int(_ms(fs.ttl)) for fs in feature_sets}
    baseline = client.info("memory")["used_memory"]
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(users):
        user = bench_user(i)
        for fs, payload in templates[i % len(templates)]:
            pipe.restore(layout.entity_key(fs, user), ttl[fs.name], payload, replace=True)
        if (i + 1) % batch == 0 or i + 1 == users:
            pipe.execute()
            pipe = client.pipeline(transaction=False)
        if i + 1 == 10_000 and users > 20_000:
            guard_memory(client, baseline, users)
        if (i + 1) % 100_000 == 0 or i + 1 == users:
            seconds = time.perf_counter() - started
            print(f"  cloned {i + 1:>9,} users  {(i + 1) / seconds:>8,.0f} users/s", flush=True)
    return time.perf_counter() - started


def guard_memory(client, baseline: int, users: int) -> None:
    """Stop before a shared machine runs out of memory: project from the first 10,000."""
    per_user = (client.info("memory")["used_memory"] - baseline) / 10_000
    needed = per_user * (users - 10_000)
    available = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo")
                     if line.startswith("MemAvailable:"))
    print(f"  projected {per_user * users / 2**30:.1f} GiB for {users:,} users; "
          f"{available / 2**30:.1f} GiB available", flush=True)
    if needed > 0.6 * available:
        raise SystemExit(f"{users:,} users would need {needed / 2**30:.1f} GiB more, over 60% "
                         f"of the {available / 2**30:.1f} GiB available: use fewer --users")


def _ms(text: str) -> int:
    from mercury.durations import parse_duration

    return parse_duration(text)


def bench_user(i: int) -> str:
    return f"usr_bench{i:011d}"


def percentiles(samples_ns: list[int]) -> dict:
    ms = sorted(s / 1e6 for s in samples_ns)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ms[-1], 3),
            "mean": round(statistics.fmean(ms), 3)}


def measure(store, reader, feature_sets, sample: list[str], as_of_ms: int) -> dict:
    client = store.client
    keys_of = {u: [layout.entity_key(fs, u) for fs in feature_sets] for u in sample}
    for user in sample[:500]:  # warm up connections and code paths
        reader.context("u", user, as_of_ms)
    raw, context, ping, payload = [], [], [], []
    for user in sample:
        started = time.perf_counter_ns()
        client.ping()
        ping.append(time.perf_counter_ns() - started)

        started = time.perf_counter_ns()
        pipe = client.pipeline(transaction=False)
        for key in keys_of[user]:
            pipe.hgetall(key)
        fetched = pipe.execute()
        raw.append(time.perf_counter_ns() - started)
        payload.append(sum(len(k) + len(v) for h in fetched for k, v in h.items()))

        started = time.perf_counter_ns()
        reader.context("u", user, as_of_ms)
        context.append(time.perf_counter_ns() - started)
    return {"context": percentiles(context), "raw_round_trip": percentiles(raw),
            "ping": percentiles(ping),
            "decode_and_client": {q: round(percentiles(context)[q] - percentiles(raw)[q], 3)
                                  for q in ("p50", "p95", "p99")},
            "payload_bytes": {"p50": int(statistics.median(payload)),
                              "p99": sorted(payload)[int(0.99 * len(payload))],
                              "max": max(payload)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--templates", type=int, default=400, help="users with real hashes")
    parser.add_argument("--events", type=int, default=16_000,
                        help="generated events for the templates (40 per user per week)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    import redis

    from mercury.config import load_settings

    config = load_settings().online_store.model_copy(update={"db": DB})
    store = RedisOnlineStore(config)
    client = store.client
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise SystemExit(f"no Redis at {config.host}:{config.port} ({exc}); start it with "
                         "`mercury stack up --only redis`") from None
    feature_sets = load_compiled()
    info = client.info("server")
    print(f"Redis {info['redis_version']} at {config.host}:{config.port}, db {DB}")
    client.flushdb()
    print(f"flushed db {DB} (bench-only database)")
    try:
        started = time.perf_counter()
        users, newest = build_templates(store, feature_sets, args.templates, args.events,
                                        args.seed)
        templates = dump_templates(client, feature_sets, users)
        keys_per_user = statistics.fmean(len(t) for t in templates)
        print(f"templates: {len(templates)} users with real hashes from {args.events:,} "
              f"generated events ({keys_per_user:.2f} feature-set hashes per user) in "
              f"{time.perf_counter() - started:.1f} s")
        client.flushdb()  # the clones alone are measured
        for fs in feature_sets:
            store.set_active(fs.name, fs.version)
        before = client.info("memory")["used_memory"]
        print(f"cloning to {args.users:,} users (DUMP once, RESTORE pipelined, "
              f"{1000:,} users per pipeline)")
        load_seconds = clone(client, feature_sets, templates, args.users)
        after = client.info("memory")["used_memory"]
        keys = client.dbsize()
        per_user = (after - before) / args.users
        print(f"loaded {keys:,} keys in {load_seconds:.1f} s; used_memory "
              f"{before / 2**20:,.1f} MiB -> {after / 2**20:,.1f} MiB = "
              f"{per_user:,.0f} bytes/user")

        rng = random.Random(args.seed)
        sample = [bench_user(rng.randrange(args.users)) for _ in range(args.samples)]
        reader = ContextReader(store, feature_sets)  # pointers cached 1 s, as when serving
        print(f"measuring {args.samples:,} random users (as of the newest template event)")
        timings = measure(store, reader, feature_sets, sample, newest)
    finally:
        client.flushdb()
        print(f"flushed db {DB}: the {args.users:,} users are gone from memory")
        store.close()

    rows = [("ContextReader.context (round trip + decode)", timings["context"]),
            ("raw round trip (pipeline of HGETALLs)", timings["raw_round_trip"]),
            ("PING round trip (floor)", timings["ping"])]
    print()
    print(f"{'ms':<46} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
    for label, p in rows:
        print(f"{label:<46} {p['p50']:>7.3f} {p['p95']:>7.3f} {p['p99']:>7.3f} {p['max']:>7.2f}")
    d = timings["decode_and_client"]
    print(f"{'decode + client (context - raw)':<46} {d['p50']:>7.3f} {d['p95']:>7.3f} "
          f"{d['p99']:>7.3f}")
    print(f"memory: {per_user:,.0f} bytes/user; payload per context p50 "
          f"{timings['payload_bytes']['p50']:,} B, p99 {timings['payload_bytes']['p99']:,} B")

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python bench/online_read_latency.py", *sys.argv[1:]]),
        "redis_version": info["redis_version"], "db": DB, "users": args.users,
        "keys": keys, "templates": len(templates), "template_events": args.events,
        "hashes_per_user": round(keys_per_user, 2),
        "feature_sets": [fs.ref for fs in feature_sets],
        "load_seconds": round(load_seconds, 1),
        "used_memory_before": before, "used_memory_after": after,
        "bytes_per_user": round(per_user),
        "samples": args.samples, "latency_ms": timings,
        "machine": f"{os.cpu_count()} cores; client and Redis on the same host",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

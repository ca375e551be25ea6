"""Online reads, ours against Feast: the same feature values, the same Redis, the same run.

1. Ours: real feature-set hashes from a generated world through ``OnlineExecutor`` (as in
   bench/online_read_latency.py), cloned with DUMP/RESTORE to ``--users`` users in Redis db 12,
   for the five feature sets the compared features come from.
2. The values: for each template user, what ``ContextReader.context`` returns, flattened to the
   scalar columns in ``COLUMNS`` (settled EUR amounts and counts by window, declines, risk
   signals, engagement, profile fields). A clone holds its template's bytes, so user ``i``'s
   values are template ``i % templates``'s; the equality check below reads both stores.
3. Feast: bench/feast_side.py, in its own locked env (bench/envs/feast, synced on first run),
   applies one feature view per feature set and writes exactly those values for every user into
   its Redis online store (db 8) with ``write_to_online_store``.
4. Measure, for the same random users, single-user calls, one process per side: ours
   (``ContextReader.context`` over the five sets, decoding tiles at read time, then picking the
   columns) and Feast's ``get_online_features(...).to_dict()`` in a long-lived Feast process
   (feast_side.py serve). The two are interleaved per user, so a shared machine's load falls on
   both alike. Both sides also time their bare Redis commands and a PING. Every Feast answer is
   compared with ours for the same user.

Dbs 12 and 8 are flushed first and at the end. Results go to bench/results/online_vs_feast.json.
Usage: python bench/online_vs_feast.py [--users 1000000] [--samples 20000] [--warmup 500]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from online_read_latency import (  # noqa: E402
    bench_user,
    build_templates,
    clone,
    dump_templates,
    percentiles,
)

from mercury.features.definition.compile import load_compiled  # noqa: E402
from mercury.features.reader import ContextReader  # noqa: E402
from mercury.online import layout  # noqa: E402
from mercury.online.redis_store import RedisOnlineStore  # noqa: E402

OURS_DB, FEAST_DB = 12, 8
FEAST_ENV = REPO / "bench" / "envs" / "feast"
FEAST_SIDE = REPO / "bench" / "feast_side.py"
RESULTS = REPO / "bench" / "results" / "online_vs_feast.json"
USER_FORMAT = "usr_bench{i:011d}"  # bench_user(i), for the Feast side
CURRENCY = "EUR"


@dataclass(frozen=True)
class Column:
    """One compared feature: a Feast feature in ``view``, read from ours at ``path``.

    ``path`` walks the decoded context (set, feature, window or field, ...); a missing step
    gives ``default``. ``how`` is "value", "count" (the number of entries: open risk flags)
    or "is:<value>" (the field equals that value: the card is frozen).
    """

    view: str
    name: str
    dtype: str
    path: tuple[str, ...]
    default: object = None
    how: str = "value"


def _money(name, feature, window):
    return Column("spending", name, "float", ("spending", feature, window, CURRENCY), 0.0)


COLUMNS = (
    _money("settled_eur_1d", "settled_amount", "1d"),
    _money("settled_eur_7d", "settled_amount", "7d"),
    _money("settled_eur_30d", "settled_amount", "30d"),
    _money("authorised_eur_7d", "authorised_amount", "7d"),
    _money("largest_purchase_eur_30d", "largest_purchase", "30d"),
    Column("spending", "settled_count_1d", "int", ("spending", "settled_count", "1d"), 0),
    Column("spending", "settled_count_7d", "int", ("spending", "settled_count", "7d"), 0),
    Column("spending", "settled_count_30d", "int", ("spending", "settled_count", "30d"), 0),
    Column("spending", "merchants_30d", "int", ("spending", "merchants", "30d"), 0),
    Column("declines", "declined_count_1h", "int", ("declines", "declined_count", "1h"), 0),
    Column("declines", "declined_count_1d", "int", ("declines", "declined_count", "1d"), 0),
    Column("declines", "declined_count_7d", "int", ("declines", "declined_count", "7d"), 0),
    Column("declines", "approved_count_1d", "int", ("declines", "approved_count", "1d"), 0),
    Column("risk", "signals_1d", "int", ("risk", "signals", "1d"), 0),
    Column("risk", "signals_7d", "int", ("risk", "signals", "7d"), 0),
    Column("risk", "open_flags", "int", ("risk", "flags"), 0, "count"),
    Column("engagement", "sessions_7d", "int", ("engagement", "sessions", "7d"), 0),
    Column("engagement", "assistant_questions_7d", "int",
           ("engagement", "assistant_questions", "7d"), 0),
    Column("engagement", "card_frozen", "bool", ("engagement", "card_lock", "event_type"),
           False, "is:CARD_FREEZE"),
    Column("profile", "risk_tier", "str", ("profile", "profile", "risk_tier")),
    Column("profile", "kyc_status", "str", ("profile", "profile", "kyc_status")),
    Column("profile", "locale", "str", ("profile", "profile", "locale")),
    Column("profile", "home_country", "str", ("profile", "profile", "home_country")),
)
SETS = sorted({c.view for c in COLUMNS})


def pick(values: dict) -> dict:
    """The compared columns out of one decoded context (``Context.values``)."""
    out = {}
    for column in COLUMNS:
        node = values
        for step in column.path:
            node = node.get(step) if isinstance(node, dict) else None
        if column.how == "count":
            out[column.name] = len(node) if node else 0
        elif column.how.startswith("is:"):
            out[column.name] = node == column.how[3:]
        else:
            out[column.name] = column.default if node is None else node
    return out


def feast_python() -> Path:
    """Create or update the Feast env from its lock file (fast when nothing changed)."""
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is not installed: run `make setup`")
    # uv ignores pip's configuration; pass the machine's local wheel folders on, as setup does.
    find_links = [arg for folder in os.environ.get("PIP_FIND_LINKS", "").split()
                  for arg in ("--find-links", folder)]
    subprocess.run([uv, "sync", "--locked", "--quiet", "--project", str(FEAST_ENV),
                    "--python", "3.11", *find_links], check=True)
    return FEAST_ENV / ".venv" / "bin" / "python"


def feast_load(python: Path, spec: Path, workdir: Path, chunk: int) -> dict:
    out = workdir / "load.json"
    subprocess.run([str(python), str(FEAST_SIDE), "load", "--spec", str(spec), "--workdir",
                    str(workdir), "--out", str(out), "--chunk", str(chunk)], check=True)
    return json.loads(out.read_text())


class FeastServer:
    """bench/feast_side.py serve: one user id in, one JSON line of timings and values out."""

    def __init__(self, python: Path, spec: Path, workdir: Path, warmup: list[str]):
        path = workdir / "warmup.json"
        path.write_text(json.dumps(warmup))
        self.process = subprocess.Popen(
            [str(python), str(FEAST_SIDE), "serve", "--spec", str(spec), "--workdir",
             str(workdir), "--warmup", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.hello = self._reply()

    def ask(self, user: str) -> dict:
        self.process.stdin.write(user + "\n")
        self.process.stdin.flush()
        return self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the Feast side stopped (exit {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def measure(store, reader, sets, feast: FeastServer, sample: list[str], as_of_ms: int,
            warmup: int) -> dict:
    """Interleaved per user (ours first on even calls, Feast first on odd ones)."""
    client = store.client
    for user in sample[:warmup]:
        pick(reader.context("u", user, as_of_ms).values)
    names = ("ours", "ours_raw", "ours_ping", "feast", "feast_ping", "feast_raw_hiredis",
             "feast_raw_python_parser")
    timings: dict[str, list[int]] = {name: [] for name in names}
    ours_values, feast_values = {}, {}
    clock = time.perf_counter_ns

    def ours(user: str) -> None:
        keys = [layout.entity_key(fs, user) for fs in sets]
        started = clock()
        ours_values[user] = pick(reader.context("u", user, as_of_ms).values)
        timings["ours"].append(clock() - started)
        started = clock()
        client.ping()
        timings["ours_ping"].append(clock() - started)
        started = clock()
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        pipe.execute()
        timings["ours_raw"].append(clock() - started)

    def theirs(user: str) -> None:
        reply = feast.ask(user)
        feast_values[user] = reply["values"]
        for name, ns in zip(names[3:], reply["ns"], strict=True):
            timings[name].append(ns)

    started = time.perf_counter()
    for n, user in enumerate(sample):
        for side in ((ours, theirs) if n % 2 == 0 else (theirs, ours)):
            side(user)
        if (n + 1) % 5_000 == 0 or n + 1 == len(sample):
            print(f"  measured {n + 1:>7,} users, both sides  "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return {"timings_ns": timings, "ours_values": ours_values, "feast_values": feast_values}


def compare(ours: dict, feast: dict) -> list[tuple]:
    mismatches = []
    for user, theirs in feast.items():
        mine = ours[user]
        for name, value in mine.items():
            if theirs.get(name) != value:
                mismatches.append((user, name, value, theirs.get(name)))
    return mismatches


def used_memory(client) -> int:
    return client.info("memory")["used_memory"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=20_000, help="measured calls per side")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--templates", type=int, default=400, help="users with real hashes")
    parser.add_argument("--events", type=int, default=16_000)
    parser.add_argument("--feast-chunk", type=int, default=10_000, help="users per Feast write")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    import redis

    from mercury.config import load_settings

    settings = load_settings().online_store
    store = RedisOnlineStore(settings.model_copy(update={"db": OURS_DB}))
    client = store.client
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise SystemExit(f"no Redis at {settings.host}:{settings.port} ({exc}); start it with "
                         "`mercury stack up --only redis`") from None
    feast_client = redis.Redis(host=settings.host, port=settings.port, db=FEAST_DB)
    info = client.info("server")
    print(f"Redis {info['redis_version']} at {settings.host}:{settings.port}; ours in db "
          f"{OURS_DB}, Feast in db {FEAST_DB}; load average {os.getloadavg()}")
    started = time.perf_counter()
    python = feast_python()
    parser_main, reader_version = redis_parser_main(), reader_commit()
    print(f"ours: mercury/features/reader.py at {reader_version}, redis-py {redis.__version__} "
          f"({parser_main})")
    print(f"Feast env ready ({FEAST_ENV.relative_to(REPO)}, {time.perf_counter() - started:.1f} s)")

    all_sets = load_compiled()
    sets = [fs for fs in all_sets if fs.name in SETS]
    workdir = Path(tempfile.mkdtemp(prefix="feast_bench_"))
    load_avg = {"start": os.getloadavg()}
    client.flushdb()
    feast_client.flushdb()
    print(f"flushed dbs {OURS_DB} and {FEAST_DB} (bench-only databases)")
    try:
        started = time.perf_counter()
        users, newest = build_templates(store, all_sets, args.templates, args.events,
                                        args.seed)
        templates = dump_templates(client, sets, users)
        print(f"templates: {len(templates)} users with real hashes from {args.events:,} "
              f"events in {time.perf_counter() - started:.1f} s")
        client.flushdb()
        for fs in sets:
            store.set_active(fs.name, fs.version)
        before = used_memory(client)
        print(f"ours: cloning to {args.users:,} users ({len(sets)} sets: {', '.join(SETS)})")
        ours_load_s = clone(client, sets, templates, args.users)
        ours_memory = used_memory(client) - before
        ours_keys = client.dbsize()
        print(f"ours: {ours_keys:,} keys in {ours_load_s:.1f} s, "
              f"{ours_memory / args.users:,.0f} bytes/user")

        # Reading with the reader from the clones: exactly what it answers for user i.
        reader = ContextReader(store, sets)
        values = [pick(reader.context("u", bench_user(i), newest).values)
                  for i in range(min(len(templates), args.users))]
        spec = {"project": "mercury_bench", "key_ttl_seconds": 400 * 86_400,
                "connection_string": f"{settings.host}:{settings.port},db={FEAST_DB}",
                "event_ts_ms": newest, "user_format": USER_FORMAT, "users": args.users,
                "views": {s: [[c.name, c.dtype] for c in COLUMNS if c.view == s] for s in SETS},
                "templates": values}
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        print(f"feast: writing {len(COLUMNS)} features in {len(SETS)} feature views for "
              f"{args.users:,} users, {args.feast_chunk:,} users per write_to_online_store")
        before = used_memory(client)
        loaded = feast_load(python, spec_path, workdir, args.feast_chunk)
        feast_memory = used_memory(client) - before
        print(f"feast: {loaded['keys']:,} keys in {loaded['load_seconds']:.1f} s, "
              f"{feast_memory / args.users:,.0f} bytes/user (feast {loaded['feast_version']}, "
              f"redis-py {loaded['redis_py_version']}, {loaded['redis_parser']})")
        load_avg["after_load"] = os.getloadavg()

        rng = random.Random(args.seed)
        sample = [bench_user(rng.randrange(args.users)) for _ in range(args.samples)]
        warmup = [bench_user(rng.randrange(args.users)) for _ in range(args.warmup)]
        feast = FeastServer(python, spec_path, workdir, warmup)
        print(f"measuring {args.samples:,} random users, ours and Feast interleaved per user "
              f"(after {args.warmup:,} warm-up calls each); load average {os.getloadavg()}")
        try:
            run = measure(store, reader, sets, feast, sample, newest, args.warmup)
        finally:
            feast.close()
        load_avg["after_measure"] = os.getloadavg()
    finally:
        client.flushdb()
        feast_client.flushdb()
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"flushed dbs {OURS_DB} and {FEAST_DB}")
        store.close()
        feast_client.close()

    mismatches = compare(run["ours_values"], run["feast_values"])
    compared = len(run["feast_values"])
    timings = run["timings_ns"]
    latency = {name: percentiles(timings[name]) for name in timings}
    # One process calling back to back: calls/s is 1 / the mean time inside a call.
    rate = {side: 1e9 / statistics.fmean(timings[side]) for side in ("ours", "feast")}
    ours, feast = latency["ours"], latency["feast"]
    ratio = {q: round(ours[q] / feast[q], 3) for q in ("p50", "p95", "p99", "max", "mean")}
    ratio["throughput"] = round(rate["ours"] / rate["feast"], 3)
    halves = [{side: percentiles(timings[side][part])["p50"] for side in ("ours", "feast")}
              for part in (slice(0, args.samples // 2), slice(args.samples // 2, None))]

    print()
    print(f"{'ms, single-user calls':<46} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
    for label, key in (("ours: ContextReader.context + pick", "ours"),
                       ("Feast: get_online_features().to_dict()", "feast"),
                       (f"ours raw: 5 HGETALL, {parser_main}", "ours_raw"),
                       ("Feast raw: 5 HMGET, hiredis", "feast_raw_hiredis"),
                       ("Feast raw: 5 HMGET, pure-Python parser", "feast_raw_python_parser"),
                       ("PING, main env", "ours_ping"),
                       ("PING, Feast env", "feast_ping")):
        p = latency[key]
        print(f"{label:<46} {p['p50']:>7.3f} {p['p95']:>7.3f} {p['p99']:>7.3f} {p['max']:>7.2f}")
    print(f"ratio ours/Feast: p50 {ratio['p50']}, p95 {ratio['p95']}, p99 {ratio['p99']} "
          f"(below 1: ours faster)")
    print(f"throughput, one process, back to back: ours {rate['ours']:,.0f} calls/s, Feast "
          f"{rate['feast']:,.0f} calls/s, ours/Feast {ratio['throughput']}")
    print(f"p50 by half of the run (drift check): {halves}")
    print(f"memory: ours {ours_memory / args.users:,.0f} bytes/user, "
          f"Feast {feast_memory / args.users:,.0f} bytes/user")
    print(f"equality: {compared:,} users x {len(COLUMNS)} features compared, "
          f"{len(mismatches)} mismatches")
    for user, name, mine, theirs in mismatches[:10]:
        print(f"  MISMATCH {user} {name}: ours {mine!r}, Feast {theirs!r}")

    import redis as redis_py

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python bench/online_vs_feast.py", *sys.argv[1:]]),
        "redis_version": info["redis_version"], "dbs": {"ours": OURS_DB, "feast": FEAST_DB},
        "users": args.users, "samples": args.samples, "warmup": args.warmup,
        "interleaved": "per user; ours first on even calls, Feast first on odd ones",
        "templates": len(templates), "template_events": args.events,
        "feature_sets": [fs.ref for fs in sets],
        "features": [{"view": c.view, "name": c.name, "dtype": c.dtype, "path": c.path}
                     for c in COLUMNS],
        "versions": {"feast": loaded["feast_version"],
                     "redis_py_feast_env": loaded["redis_py_version"],
                     "redis_parser_feast_env": loaded["redis_parser"],
                     "redis_py_main_env": redis_py.__version__,
                     "redis_parser_main_env": parser_main,
                     "reader_commit": reader_version},
        "load": {"ours_clone_seconds": round(ours_load_s, 1), "ours_keys": ours_keys,
                 "feast_write_seconds": loaded["load_seconds"], "feast_keys": loaded["keys"]},
        "bytes_per_user": {"ours": round(ours_memory / args.users),
                           "feast": round(feast_memory / args.users)},
        "latency_ms": latency, "p50_by_half": halves,
        "throughput_calls_per_s": {side: round(r) for side, r in rate.items()},
        "ratio_ours_over_feast": ratio,
        "equality": {"users_compared": compared, "features": len(COLUMNS),
                     "mismatches": len(mismatches),
                     "examples": [list(m) for m in mismatches[:10]]},
        "load_average": load_avg,
        "machine": f"{os.cpu_count()} cores, shared; client and Redis on the same host",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    if mismatches:
        raise SystemExit(f"{len(mismatches)} values differ between ours and Feast")


def redis_parser_main() -> str:
    """The parser redis-py chose when it was imported (hiredis if it was installed then)."""
    from redis.connection import DefaultParser

    if "Hiredis" not in DefaultParser.__name__:
        return "pure-Python"
    import hiredis

    return f"hiredis {hiredis.__version__}"


def reader_commit() -> str:
    """The last commit that changed the reader: the code measured, if the tree is clean."""
    path = "mercury/features/reader.py"
    log = subprocess.run(["git", "log", "-1", "--format=%h", "--", path], cwd=REPO,
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path], cwd=REPO).returncode
    return f"{log}{' + uncommitted changes' if dirty else ''}"


if __name__ == "__main__":
    main()

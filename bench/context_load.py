"""The context API under load: `mercury serve` in its own process, a closed-loop load tool in
another, 32 concurrent clients; features-only questions and questions with retrieval.

1. World, in a temporary folder with its own config (``tests.conftest.write_config``):
   - a private ``redis-server`` on a free port (no persistence), so nothing is flushed on the
     shared server and its CPU can be told apart;
   - a generated world (``--templates`` users, ``--events`` events over the last 7 days,
     default anomaly mix, ``--documents`` knowledge documents) run through ``OnlineExecutor``
     into that Redis, plus each user's profile as a CDC create (the generator writes profiles
     to Postgres, not to the log);
   - each template's hashes DUMPed once and RESTOREd round robin under ``--users`` new ids
     (``usr_load0000000`` ...), the templates removed, every set's active pointer set;
   - the knowledge index rebuilt from the generated documents with the real model
     (``retrieval.embedding_model``, all-MiniLM-L6-v2) and promoted behind the alias;
   - before any service starts, ``cpu_breakdown``: the features-only path in this process,
     one request at a time, layer by layer (Redis pipeline, fetch and decode, the whole
     answer with its audit record, shipping), as CPU per request.
2. For each ``--variants`` x ``--workers`` count: ``mercury serve --workers N --port P`` with
   ``MERCURY_CONFIG`` pointing at that config (``PYTHONPATH`` = this tree, so a copy of the
   repository measures its own code); wait for /readyz (the model's warm-up). Variants:
   ``default`` (the serving settings as configured) and ``no-shedding`` (breakers that never
   open, deadlines of a second, no 503 for event-loop lag: what each request costs when it
   does all its work).
3. For each scenario: ``bench/context_load_client.py`` in its own process (see its doc: raw
   asyncio keep-alive connections on uvloop, assertions minted first, warm-up, then a measured
   window); /metrics scraped before and after; the audit spool let drain before the next run.
   Scenarios: ``features`` (can-I-afford and spending-summary questions: no documents planned)
   and ``retrieval`` (decline and refund questions: half from 40 common phrasings, half naming
   one of the world's merchants). A baseline with one client (first worker count of each
   variant) shows the latency without queueing.
4. Results in ``bench/results/context_load.json`` (or ``--out``); the latency CDFs in a PNG
   of the same name when matplotlib is importable (else
   ``--plot-only`` can draw them later from the JSON, e.g. under
   ``uv run --with matplotlib``).

Usage: python bench/context_load.py [--users 100000] [--workers 1,2] [--duration-s 60]
       python bench/context_load.py --breakdown-only   # world + CPU breakdown into the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import free_port, write_config  # noqa: E402

RESULTS = REPO / "bench" / "results" / "context_load.json"
CLIENT = REPO / "bench" / "context_load_client.py"
STREAMS = ("transactions", "user_activity", "risk_signals")
USER_FORMAT = "usr_load{:07d}"
# ``no-shedding``: the breakers never open, the deadlines are a second and no request is refused
# (for event-loop lag or by admission), so every request does its whole work (the bulkhead of 4
# waiting searches stays: ``serving.retrieval_queue`` exists from 2355f16 on, and is left at its
# default so the runs compare across commits): what the work costs and how long it queues, rather
# than what the fallbacks make of it. (``overload_lag_ms`` exists from b2d7090 on; the config
# rejects unknown keys, so drop it to run an older commit.)
VARIANTS = {"default": {},
            "no-shedding": {"breaker_min_calls": 1_000_000, "features_deadline_ms": 1_000,
                            "retrieval_deadline_ms": 1_000, "budget_ms": 1_000,
                            "overload_lag_ms": 1_000_000, "max_in_flight": 1_000,
                            "admission_queue": 1_000, "admission_wait_ms": 1_000}}
DAY_MS = 86_400_000


def say(text: str) -> None:
    print(text, flush=True)


def source_state() -> dict:
    """The commit under test, and files of the library changed but not committed (other
    engineers edit this tree while benches run: the record says what was measured)."""
    def git(*argv):  # only trailing blanks go: a status line starts with one (" M path")
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True,
                              text=True).stdout.rstrip()

    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown",
            "modified": [line[3:] for line in git("status", "--short", "--",
                                                  "mercury").splitlines()],
            "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


# --- 1. the world ------------------------------------------------------------------------------

class RedisServer:
    """A private redis-server on a free port, no persistence; stopped by ``stop``."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise SystemExit(f"the private redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _cdc_create(row: dict, lsn: int) -> dict:
    """A Debezium create of a profile row, as the CDC stream carries it."""
    ts = row["updated_at"]
    return {"before": None, "after": row, "op": "c", "ts_ms": ts,
            "source": {"connector": "postgresql", "db": "mercury", "schema": "mercury",
                       "table": "user_profiles", "lsn": lsn, "tx_id": lsn, "ts_ms": ts}}


def build_features(settings, args, now_ms: int):
    """Real hashes for ``--templates`` users; returns (template ids, merchant names, counts)."""
    from mercury.contracts import registry
    from mercury.contracts.validation import validator
    from mercury.eventlog import open_producer
    from mercury.eventlog.file_log import FileEventReader
    from mercury.features.definition.compile import load_compiled
    from mercury.features.executors.streaming.executor import DictState, OnlineExecutor
    from mercury.generator.knobs import Knobs
    from mercury.generator.traffic import TrafficGenerator
    from mercury.online.factory import open_store

    started = time.perf_counter()
    knobs = Knobs(events=args.events, users=args.templates, merchants=args.merchants,
                  documents=args.documents, seed=args.seed, start_ms=now_ms - 7 * DAY_MS)
    profiles: list[dict] = []
    producer = open_producer(settings, writer_id="loadgen")
    generator = TrafficGenerator(knobs, producer, on_profile_changes=profiles.extend)
    manifest = generator.run()
    say(f"  generated {sum(manifest.generated.values()):,} events, "
        f"{len(generator.documents)} documents for {args.templates} users in "
        f"{time.perf_counter() - started:.1f} s")

    sets = load_compiled()
    store = open_store(settings)
    executor, states, pending = OnlineExecutor(sets), {}, []
    reader, valid = FileEventReader(settings.event_log.root), 0
    records = []
    for stream in STREAMS:
        check = validator(registry.stream(stream).schema_subject)
        records += [(stream, v.record) for m in reader.read(stream)
                    if (v := check.validate_bytes(m.value)).ok]
    latest = {}
    for row in profiles:  # the newest row per user, as a create
        latest[row["user_id"]] = row
    records += [("user_profile_cdc", _cdc_create(row, 1_000 + i))
                for i, row in enumerate(latest.values())]
    for stream, record in records:
        valid += 1
        for key, _ in executor.route(stream, record):
            pending += executor.process(key, stream, record,
                                        states.setdefault(key, DictState())).writes
        if len(pending) >= 2_000:
            store.write(pending)
            pending = []
    store.write(pending)
    for name in sorted({fs.name for fs in sets}):
        store.set_active(name, max(fs.version for fs in sets if fs.name == name))
    templates = sorted({key.partition(":")[2] for key in states})
    say(f"  {valid:,} valid records through OnlineExecutor -> {len(templates)} users with "
        f"real hashes in {time.perf_counter() - started:.1f} s")
    store.close()
    merchants = sorted({m.name for m in generator.world.merchants})
    return sets, templates, merchants


def clone_users(settings, sets, templates: list[str], users: int) -> dict:
    """DUMP each template's hashes once, RESTORE them round robin under ``users`` ids."""
    import redis

    from mercury.online import layout

    client = redis.Redis(host=settings.online_store.host, port=settings.online_store.port,
                         db=settings.online_store.db)
    pipe = client.pipeline(transaction=False)
    wanted = [(u, fs) for u in templates for fs in sets]
    for user, fs in wanted:
        key = layout.entity_key(fs, user)
        pipe.dump(key)
        pipe.pttl(key)
    replies = pipe.execute()
    dumps: dict[str, list] = {u: [] for u in templates}
    for i, (user, fs) in enumerate(wanted):
        payload, ttl = replies[2 * i], replies[2 * i + 1]
        if payload is not None:
            dumps[user].append((fs, payload, max(0, ttl)))
    shapes = [d for d in dumps.values() if d]
    client.delete(*[layout.entity_key(fs, u) for u, fs in wanted])
    before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(users):
        user = USER_FORMAT.format(i)
        for fs, payload, ttl in shapes[i % len(shapes)]:
            pipe.restore(layout.entity_key(fs, user), ttl, payload, replace=True)
        if (i + 1) % 1_000 == 0 or i + 1 == users:
            pipe.execute()
            pipe = client.pipeline(transaction=False)
        if (i + 1) % 25_000 == 0 or i + 1 == users:
            say(f"  cloned {i + 1:>9,} users ({(i + 1) / (time.perf_counter() - started):,.0f}"
                f" users/s)")
    after = client.info("memory")["used_memory"]
    info = {"users": users, "templates": len(shapes), "keys": client.dbsize(),
            "hashes_per_user": round(sum(len(s) for s in shapes) / len(shapes), 2),
            "bytes_per_user": round((after - before) / users),
            "clone_s": round(time.perf_counter() - started, 1)}
    client.close()
    return info


def build_index(settings) -> dict:
    from mercury.retrieval.chunking import ChunkingSpec
    from mercury.retrieval.embedding import open_embedder
    from mercury.retrieval.factory import open_index
    from mercury.retrieval.rebuild import rebuild

    cfg = settings.retrieval
    started = time.perf_counter()
    embedder = open_embedder(cfg.embedding_model, cfg.embed_batch_size)
    outcome = rebuild(settings, open_index(cfg), embedder,
                      ChunkingSpec(cfg.max_tokens, cfg.overlap_tokens),
                      created_at_ms=int(time.time() * 1000), log=lambda m: say(f"  {m}"))
    if not outcome.decision.swap:
        raise SystemExit(f"the rebuilt index was not promoted: {outcome.summary()}")
    say(f"  index {outcome.version.name} ({embedder.label}) built and promoted in "
        f"{time.perf_counter() - started:.1f} s: {outcome.summary()}")
    return {"version": outcome.version.name, "embedding_model": embedder.label,
            "chunks_embedded": outcome.filled.chunks_embedded,
            "recall_at_5": outcome.candidate.recall_at_5,
            "build_s": round(time.perf_counter() - started, 1)}


def cpu_breakdown(settings, sets, users: int, n: int, seed: int,
                  user_format: str = USER_FORMAT, parts: list[str] | None = None) -> dict:
    """CPU per request of the features-only path, layer by layer, in this process and one
    request at a time (no queueing): the Redis pipeline alone (redis.asyncio), then
    ``FeatureFetcher.fetch`` (+ decode, snapshot), then ``ContextService.answer`` (+ plan,
    response, audit record, spool write, metrics), then the audit shipper's work per record.
    Set against the load runs' server CPU per request, the rest is HTTP (uvicorn, Starlette,
    the credentials, JSON in and out). ``parts``: every request names these parts
    (``options.parts``, e.g. bench/serving_vs_feast.py) instead of the two questions."""
    import asyncio
    import random

    from mercury.online import layout
    from mercury.serving import request_ids
    from mercury.serving.context import ContextRequest
    from mercury.serving.intent import plan_for
    from mercury.serving.runtime import build_runtime

    own = settings.model_copy(update={"data_dir": settings.data_dir.parent / "breakdown"})
    rt = build_runtime(own, feature_sets=sets)
    fetcher, service = rt.service.features, rt.service
    active = {fs.name: max(f.version for f in sets if f.name == fs.name) for fs in sets}
    catalog = {fs.name: fs for fs in sets if fs.version == active[fs.name]}
    rng = random.Random(seed)
    questions = ("Can I afford a new phone?", "Summarize my spending this week")
    if parts is not None:
        questions = ("features",)
    work = [(user_format.format(rng.randrange(users)), rng.choice(questions))
            for _ in range(n)]
    plans = {q: list(plan_for(q).feature_sets) for q in questions}
    if parts is not None:
        plans = {"features": [p.partition(".")[2] for p in parts if p.startswith("features.")]}

    async def redis_pipeline(user, question):
        pipe = fetcher.reader.store.async_client.pipeline(transaction=False)
        for name in plans[question]:
            pipe.hgetall(layout.entity_key(catalog[name], user))
        await pipe.execute()

    async def feature_fetch(user, question):
        await fetcher.fetch(user, plans[question], int(time.time() * 1000), 1.0)

    async def answer(user, question):
        await service.answer(ContextRequest(user, question, "llm-gateway", "bench",
                                            request_ids.mint(rt.keys.service_tokens,
                                                             "llm-gateway"),
                                            parts=None if parts is None else tuple(parts)),
                             time.perf_counter())

    async def measure() -> dict:
        out = {}
        for name, step in (("redis_pipeline", redis_pipeline), ("feature_fetch", feature_fetch),
                           ("answer", answer)):
            for user, question in work[:300]:
                await step(user, question)
            cpu, wall = time.process_time(), time.perf_counter()
            for user, question in work:
                await step(user, question)
            out[name] = {"cpu_us": round(1e6 * (time.process_time() - cpu) / n, 1),
                         "wall_us": round(1e6 * (time.perf_counter() - wall) / n, 1)}
        await fetcher.reader.store.aclose()
        return out

    try:
        import uvloop
        found = uvloop.run(measure())
    except ImportError:  # pragma: no cover
        found = asyncio.run(measure())
    cpu = time.process_time()
    shipped = rt.shipper.ship_once()
    found["audit_ship_per_record"] = {
        "cpu_us": round(1e6 * (time.process_time() - cpu) / max(1, shipped), 1),
        "records": shipped}
    rt.service.documents.close()
    rt.spool.close()
    found.update({"requests": n, "loadavg": [round(x, 2) for x in os.getloadavg()]})
    say("  CPU per request, one at a time: " + ", ".join(
        f"{k} {v['cpu_us']:.0f} us" for k, v in found.items() if isinstance(v, dict)))
    return found


# --- 2. the service ----------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return sorted(out)


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def variant_config(config: Path, variant: str) -> Path:
    """A copy of the bench config with the variant's ``serving`` settings."""
    import yaml

    if not VARIANTS[variant]:
        return config
    raw = yaml.safe_load(config.read_text())
    raw.setdefault("serving", {}).update(VARIANTS[variant])
    path = config.with_name(f"mercury-{variant}.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


class Service:
    def __init__(self, config: Path, workers: int, logdir: Path, variant: str):
        self.config, self.workers, self.variant = config, workers, variant
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = logdir / f"serve-{variant}-w{workers}.log"
        self.proc: subprocess.Popen | None = None
        self.warm_up_error: str | None = None

    def start(self, timeout_s: float = 240.0, allow_warm_up_error: bool = False) -> float:
        """Seconds until /readyz answers 200 on fresh connections. A warm-up error stops the
        bench unless ``allow_warm_up_error`` (a features-only run needs no index); it is kept
        in ``warm_up_error``."""
        self.warm_up_error = None
        env = {**os.environ, "MERCURY_CONFIG": str(self.config), "PYTHONPATH": str(REPO)}
        started = time.perf_counter()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "mercury"), "serve", "--workers",
                 str(self.workers), "--port", str(self.port)],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        streak = 0
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"mercury serve exited ({self.proc.returncode}); see "
                                 f"{self.log}:\n{self.log.read_text()[-3000:]}")
            status, body = get(self.url + "/readyz")
            if status == 200:
                warm_up_error = json.loads(body).get("warm_up_error")
                if warm_up_error and not allow_warm_up_error:
                    raise SystemExit(f"warm-up failed: {warm_up_error}")
                self.warm_up_error = warm_up_error
                streak += 1  # every worker answers ready on fresh connections
                if streak >= 10 * self.workers:
                    return time.perf_counter() - started
                continue
            streak = 0
            time.sleep(0.25)
        raise SystemExit(f"not ready after {timeout_s} s; see {self.log}")

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


# --- /metrics ----------------------------------------------------------------------------------

def scrape(url: str) -> dict:
    """The families the report uses: stage histograms, counters, gauges."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = get(url + "/metrics", timeout=5)
    if status != 200:
        return {}
    out: dict = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if s.name.endswith("_bucket"):
                out.setdefault(s.name, {}).setdefault(labels, {})[s.labels["le"]] = s.value
            else:
                out.setdefault(s.name, {})[labels] = s.value
    return out


def metrics_delta(before: dict, after: dict) -> dict:
    """Counters and histogram buckets gained over a run (one process's view)."""
    out: dict = {"stage_histogram_ms": {}, "counters": {}}
    for labels, buckets in after.get("context_stage_latency_ms_bucket", {}).items():
        prior = before.get("context_stage_latency_ms_bucket", {}).get(labels, {})
        gained = {le: int(n - prior.get(le, 0)) for le, n in buckets.items()}
        stage = labels.partition("=")[2]
        out["stage_histogram_ms"][stage] = {"buckets": gained,
                                            **bucket_quantiles(gained)}
    for name in ("context_requests_total", "context_degraded_parts_total",
                 "context_cache_hits_total", "context_refused_total"):
        for labels, value in after.get(name, {}).items():
            gained = value - before.get(name, {}).get(labels, 0)
            if gained:
                out["counters"][f"{name}{{{labels}}}"] = int(gained)
    for name in ("context_audit_spool_backlog_bytes", "context_audit_shipped_total"):
        out["counters"][name] = after.get(name, {}).get("", None)
    return out


def bucket_quantiles(buckets: dict) -> dict:
    """p50/p95/p99 from cumulative buckets, linear within a bucket (Prometheus' method)."""
    edges = sorted(((float(le), n) for le, n in buckets.items()), key=lambda e: e[0])
    total = edges[-1][1] if edges else 0
    if not total:
        return {"n": 0}
    out = {"n": total}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        rank, lower, below = q * total, 0.0, 0
        for upper, count in edges:
            if count >= rank:
                if upper == float("inf"):
                    out[name] = f">{lower:g}"
                else:
                    share = (rank - below) / max(1, count - below)
                    out[name] = round(lower + share * (upper - lower), 2)
                break
            lower, below = upper, count
    return out


def wait_for_audit(url: str, timeout_s: float = 120.0) -> float:
    """Seconds until the audit spool is shipped (one process's view)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        backlog = scrape(url).get("context_audit_spool_backlog_bytes", {}).get("", 0)
        if not backlog:
            break
        time.sleep(0.5)
    return round(time.perf_counter() - started, 1)


# --- 3. the runs -------------------------------------------------------------------------------

def run_client(service: Service, world_file: Path, redis_pid: int, scenario: str,
               concurrency: int, duration_s: float, warmup_s: float, pool: int,
               workdir: Path, args) -> dict:
    out = workdir / (f"client-{service.variant}-w{service.workers}-{scenario}-"
                     f"c{concurrency}.json")
    command = [sys.executable, str(CLIENT), "--port", str(service.port),
               "--world", str(world_file), "--scenario", scenario,
               "--concurrency", str(concurrency), "--duration-s", str(duration_s),
               "--warmup-s", str(warmup_s), "--assertions", str(pool),
               "--repeated", str(args.repeated),
               "--pids", ",".join(map(str, service.pids())), "--redis-pid", str(redis_pid),
               "--seed", str(args.seed), "--out", str(out)]
    env = {**os.environ, "MERCURY_CONFIG": str(service.config), "PYTHONPATH": str(REPO)}
    before = scrape(service.url)
    subprocess.run(command, env=env, cwd=REPO, check=True)
    after = scrape(service.url)
    result = json.loads(out.read_text())
    result["workers"] = service.workers
    result["variant"] = service.variant
    result["metrics"] = metrics_delta(before, after) if service.workers == 1 else \
        {"note": "not diffed: with several workers each scrape reaches one of them at random",
         "one_worker_at_end": metrics_delta({}, after)}
    result["audit_drain_s"] = wait_for_audit(service.url)
    return result


def row(result: dict) -> str:
    lat, srv, cpu = result["latency_ms"], result["server_total_ms"], result["cpu"]
    return (f"{result['variant']:<11} {result['workers']:>2} {result['scenario']:<9} "
            f"{result['concurrency']:>3} {result['requests_per_s']:>8.1f} "
            f"{result['complete_per_s']:>8.1f} {lat['p50']:>7.1f} {lat['p95']:>7.1f} "
            f"{lat['p99']:>7.1f} {lat['max']:>8.1f} {srv.get('p95', 0):>7.1f} "
            f"{result['degraded_requests']:>6} {result['requests'] - result['ok']:>5} "
            f"{cpu['server_cores']:>5.2f} {cpu['redis_cores']:>5.2f} {cpu['client_cores']:>5.2f}"
            f" {cpu['other_processes_cores']:>5.2f} "
            f"{result['requests_per_s_per_server_core'] or 0:>8.1f}")


HEADER = ("variant      w scenario    c    req/s complete     p50     p95     p99      max  "
          "srvp95 degrad  errs   api redis  load other rps/apicore")


# --- 4. the plot -------------------------------------------------------------------------------

def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        say("matplotlib is not importable here: no plot (draw it later with --plot-only, "
            "e.g. `uv run --with matplotlib python bench/context_load.py --plot-only`)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, scenario, aim in ((axes[0], "features", 20), (axes[1], "retrieval", 60)):
        for run in results["runs"]:
            if run["scenario"] != scenario or not run["cdf_ms"]:
                continue
            xs, ys = zip(*run["cdf_ms"], strict=True)
            label = (f"{run['variant']}, {run['workers']} worker{'s' * (run['workers'] > 1)}, "
                     f"{run['concurrency']} client{'s' * (run['concurrency'] > 1)}: "
                     f"{run['requests_per_s']:.0f} req/s")
            ax.plot(xs, ys, label=label)
        ax.axvline(aim, color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("client-measured latency (ms, log scale)")
        ax.set_title(f"{scenario}: aim p95 < {aim} ms")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of requests at or below")
    fig.suptitle(f"Context API under load ({results['date']}, {results['machine']})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    say(f"wrote {path.relative_to(REPO)}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--templates", type=int, default=400, help="users with real hashes")
    parser.add_argument("--events", type=int, default=16_000)
    parser.add_argument("--merchants", type=int, default=800)
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to run")
    parser.add_argument("--variants", default="default,no-shedding",
                        help=f"serving settings to run: {', '.join(VARIANTS)}")
    parser.add_argument("--scenarios", default="features,retrieval")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=100_000,
                        help="single-use assertions minted per run (one per request)")
    parser.add_argument("--repeated", type=float, default=0.5,
                        help="retrieval: share of questions from the 40 common phrasings")
    parser.add_argument("--baseline-duration-s", type=float, default=20.0,
                        help="one client, first worker count of each variant; 0 skips it")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--breakdown-requests", type=int, default=3_000,
                        help="requests per layer of the in-process CPU breakdown")
    parser.add_argument("--breakdown-only", action="store_true",
                        help="build the feature world, run the CPU breakdown, add it to the "
                             "JSON and stop (no index, no service)")
    parser.add_argument("--plot-only", action="store_true",
                        help="draw the PNG from the existing JSON and stop")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="the results JSON (e.g. a second run at another --concurrency)")
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return

    load_start = os.getloadavg()
    source = source_state()
    say(f"code under test: {REPO} at {source['commit']}"
        f"{', modified: ' + ' '.join(source['modified']) if source['modified'] else ''}")
    workdir = Path(tempfile.mkdtemp(prefix="context_load_"))
    say(f"workdir {workdir}; load average {load_start[0]:.2f} {load_start[1]:.2f} "
        f"{load_start[2]:.2f}")
    redis_server = RedisServer(workdir)
    service = None
    runs = []
    try:
        redis_server.start()
        config = write_config(workdir, online_store={"host": "127.0.0.1", "port": redis_server.port,
                                              "db": 0})
        os.environ["MERCURY_CONFIG"] = str(config)
        from mercury.config import load_settings
        from mercury.privacy.keys import load_keys

        settings = load_settings()
        load_keys(settings)  # created now, so the service and the client share them
        say(f"[1/3] world: private redis-server on {redis_server.port}, config {config}")
        now_ms = int(time.time() * 1000)
        sets, templates, merchants = build_features(settings, args, now_ms)
        population = clone_users(settings, sets, templates, args.users)
        say(f"  {population['keys']:,} keys, {population['hashes_per_user']} hashes/user, "
            f"{population['bytes_per_user']:,} bytes/user")
        say("  features-only path, in process (bench.context_load.cpu_breakdown):")
        breakdown = cpu_breakdown(settings, sets, args.users, args.breakdown_requests,
                                  args.seed)
        if args.breakdown_only:
            results = json.loads(args.out.read_text()) if args.out.exists() else {}
            results["breakdown"] = {**breakdown, "commit": source["commit"],
                                    "modified_under_mercury": source["modified"],
                                    "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                                    "command": " ".join(["python bench/context_load.py",
                                                         *sys.argv[1:]])}
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            say(f"wrote the breakdown into {args.out}")
            return
        index = build_index(settings)
        world_file = workdir / "world.json"
        world_file.write_text(json.dumps({"users": args.users, "user_format": USER_FORMAT,
                                          "merchants": merchants}))

        scenarios = args.scenarios.split(",")
        servers = [(v, int(w)) for v in args.variants.split(",")
                   for w in args.workers.split(",")]
        first_workers = servers[0][1]
        for variant, workers in servers:
            service = Service(variant_config(config, variant), workers, workdir, variant)
            say(f"[2/3] mercury serve --workers {workers} (port {service.port}), "
                f"{variant} serving settings {VARIANTS[variant]} ...")
            ready_s = service.start()
            say(f"  ready in {ready_s:.1f} s; processes {service.pids()}")
            plans = [(s, args.concurrency, args.duration_s, args.pool) for s in scenarios]
            if workers == first_workers and args.baseline_duration_s:
                plans = [(s, 1, args.baseline_duration_s, 5_000) for s in scenarios] + plans
            for scenario, concurrency, duration, pool in plans:
                say(f"[3/3] {variant}: {scenario}, {workers} worker(s), {concurrency} "
                    f"client(s), {args.warmup_s:g} s warm-up + {duration:g} s")
                result = run_client(service, world_file, redis_server.proc.pid, scenario,
                                    concurrency, duration, args.warmup_s, pool, workdir, args)
                result["ready_s"] = round(ready_s, 1)
                runs.append(result)
                say(HEADER)
                say(row(result))
            service.stop()
            service = None
    finally:
        if service is not None:
            service.stop()
        redis_server.stop()
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    load_end = os.getloadavg()
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python bench/context_load.py", *sys.argv[1:]]),
        "commit": source["commit"], "modified_under_mercury": source["modified"],
        "started": source["started"],
        "machine": f"{os.cpu_count()} cores, shared by server, Redis, client and other jobs",
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "breakdown": breakdown,
        "world": {"population": population, "index": index, "merchants": len(merchants),
                  "template_events": args.events, "documents": args.documents},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {args.out}")
    say(HEADER)
    for result in runs:
        say(row(result))
    plot(results, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()

"""The load tool of ``bench/context_load.py``: a closed loop of N clients against a running
context API, in its own process.

Each client holds one HTTP/1.1 keep-alive connection (raw asyncio streams on uvloop: a request
is one ``write`` of pre-encoded headers and a JSON body, a response is read by its
``content-length``), and sends its next request as soon as the previous answer is in. Before
the clock starts it mints a pool of single-use end-user assertions for random users
(``mercury.serving.local_idp.issue_assertion``, one per request, living at most
``serving.identity.max_lifetime_s``) and the caller's service token; the pool is minted by
each run, right before its warm-up.

Only requests sent and answered inside the measured window count. At both ends of the window
the client reads the CPU time of the server's processes, of Redis and of itself from /proc,
and the machine's busy time from /proc/stat, so the result says how many cores each used.

Usage (normally started by bench/context_load.py):
  python bench/context_load_client.py --port 8700 --world world.json --scenario features \
      --pids 123,124 --redis-pid 99 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import deque
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CALLER = "llm-gateway"
TICKS = os.sysconf("SC_CLK_TCK")

# Features only: these plan feature sets and no documents (mercury.serving.intent).
AFFORD = ("Can I afford {item}?", "Can I afford {item} this month?",
          "Do I have enough money for {item}?", "Is {item} within my budget?",
          "Can I buy {item} right now?")
ITEMS = ("a 300 euro jacket", "a new phone", "a weekend in Lisbon", "concert tickets",
         "a 45 dollar dinner", "a second-hand bike", "new running shoes", "a 1,200 euro laptop",
         "groceries for the week", "a train ticket to Paris")
SUMMARY = ("Summarize my spending this week", "Summarize my spending this month",
           "How much have I spent on restaurants lately?", "Give me a breakdown of my expenses",
           "What did I spend money on yesterday?", "Summarize my spending on groceries")

# With retrieval: 40 common phrasings (24 about declines, 16 about refunds and returns).
DECLINE = (
    "Why was my card declined?", "Why was my card declined at the till?",
    "My payment was declined, why?", "Why did my card get declined online?",
    "Why was my purchase declined?", "Why was my transaction declined this morning?",
    "My card got refused, why?", "Why was my payment refused?",
    "Why was my card rejected?", "My payment was rejected at the shop",
    "Why was my card denied?", "Why is my card blocked?",
    "My payment didn't go through", "The payment did not go through, what happened?",
    "Why did my contactless payment get declined?", "Declined at the petrol station, why?",
    "Why was my online order declined?", "Card declined abroad, what can I do?",
    "Why does my card keep getting declined?", "Failed payment at the supermarket, why?",
    "Payment failed twice today, why?", "Why was I declined for insufficient funds?",
    "Mi tarjeta fue rechazada, ¿por qué?", "Warum wurde meine Karte abgelehnt?",
)
REFUND = (
    "How do I get a refund?", "How long does a refund take?",
    "Can I get a refund for my last purchase?", "How do I request a refund from a merchant?",
    "When will my refund arrive?", "How do I return an item I bought?",
    "Can I return my order?", "How do I cancel my subscription?",
    "How do I cancel a recurring payment?", "Where is my refund?",
    "The merchant promised a refund, where is it?", "How do I cancel an order?",
    "Refund still pending after a week", "Can I cancel a payment I just made?",
    "Comment obtenir un remboursement ?", "¿Cómo pido un reembolso?",
)
COMMON = DECLINE + REFUND
NOVEL = ("Why was my card declined at {m}?", "My payment at {m} was declined, why?",
         "Why did {m} refuse my card?", "How do I get a refund from {m}?",
         "How do I return something I bought at {m}?", "How do I cancel my subscription with {m}?")


def feature_question(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(AFFORD).format(item=rng.choice(ITEMS))
    return rng.choice(SUMMARY)


class RetrievalQuestions:
    """``repeated`` of the questions are one of the 40 common phrasings; the others name a
    merchant of the world in one of 6 templates (6 x merchants texts, few repeats)."""

    def __init__(self, merchants: list[str], repeated: float):
        self.merchants = merchants
        self.repeated = repeated

    def __call__(self, rng: random.Random) -> str:
        if rng.random() < self.repeated:
            return rng.choice(COMMON)
        return rng.choice(NOVEL).format(m=rng.choice(self.merchants))


def check_plans(questions, want_documents: bool) -> None:
    from mercury.serving.intent import plan_for

    wrong = [q for q in questions if plan_for(q).documents != want_documents
             or plan_for(q).intent == "general"]
    if wrong:
        raise SystemExit(f"questions planned unlike the scenario says: {wrong[:5]}")


# --- CPU accounting from /proc -----------------------------------------------------------------

def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu_s(pid: int) -> dict[int, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over every core since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


class CpuProbe:
    def __init__(self, server_pids: list[int], redis_pid: int | None):
        self.server_pids = server_pids
        self.redis_pid = redis_pid

    def sample(self) -> dict:
        return {"t": time.perf_counter(), "wall": time.time(),
                "server": {pid: proc_cpu_s(pid) for pid in self.server_pids},
                "threads": {pid: thread_cpu_s(pid) for pid in self.server_pids},
                "redis": proc_cpu_s(self.redis_pid) if self.redis_pid else 0.0,
                "client": time.process_time(), "machine": machine_ticks(),
                "loadavg": os.getloadavg()}

    @staticmethod
    def delta(a: dict, b: dict) -> dict:
        wall = b["t"] - a["t"]
        per_process = {str(pid): round(b["server"][pid] - a["server"][pid], 2)
                       for pid in a["server"]}
        threads = {}
        for pid, before in a["threads"].items():
            used = {tid: b["threads"][pid].get(tid, t0) - t0 for tid, t0 in before.items()}
            top = sorted(used.items(), key=lambda kv: -kv[1])[:4]
            threads[str(pid)] = {"main_thread_s": round(used.get(pid, 0.0), 2),
                                 "other_threads_s": round(sum(used.values())
                                                          - used.get(pid, 0.0), 2),
                                 "threads": len(before),
                                 "top": [[tid, round(s, 2)] for tid, s in top]}
        busy = (b["machine"][0] - a["machine"][0]) / TICKS
        cores = os.cpu_count() or 1
        server = sum(per_process.values())
        redis = b["redis"] - a["redis"]
        client = b["client"] - a["client"]
        return {"wall_s": round(wall, 2), "server_cpu_s": round(server, 2),
                "server_cores": round(server / wall, 3), "server_per_process_s": per_process,
                "server_threads": threads,
                "redis_cpu_s": round(redis, 2), "redis_cores": round(redis / wall, 3),
                "client_cpu_s": round(client, 2), "client_cores": round(client / wall, 3),
                "machine_busy_cores": round(busy / wall, 3), "machine_cores": cores,
                "other_processes_cores": round(max(0.0, busy - server - redis - client) / wall,
                                               3),
                "loadavg_before": [round(x, 2) for x in a["loadavg"]],
                "loadavg_after": [round(x, 2) for x in b["loadavg"]]}


# --- the load ----------------------------------------------------------------------------------

class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        lower = header.lower()
        at = lower.index(b"content-length:") + 15
        length = int(lower[at:lower.index(b"\r\n", at)])
        payload = await self.reader.readexactly(length)
        if b"connection: close" in lower:
            self.close()
        return status, payload


class Run:
    def __init__(self, args, users: list[str], assertions: Assertions, token: str,
                 question):
        self.args = args
        self.users = users
        self.assertions = assertions
        self.question = question
        self.head = (f"POST /v1/context HTTP/1.1\r\nhost: {args.host}:{args.port}\r\n"
                     f"content-type: application/json\r\nauthorization: Bearer {token}\r\n"
                     ).encode()
        self.measuring = False
        self.stopping = False
        self.latency_ns: list[int] = []
        self.ok_latency_ns: list[int] = []
        self.server_total: list[float] = []
        self.server_stage: dict[str, list[float]] = {}
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.degraded_requests = 0
        self.with_documents = 0
        self.degraded_parts: dict[str, int] = {}
        self.intents: dict[str, int] = {}
        self.texts: dict[str, int] = {}
        self.sent_in_warm_up = 0

    async def client(self, i: int) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        conn = Connection(self.args.host, self.args.port)
        options = {"budget_ms": self.args.budget_ms} if self.args.budget_ms else {}
        while not self.stopping:
            user, assertion = self.assertions.take()  # single-use: one per request
            question = self.question(rng)
            body = orjson.dumps({"user_id": user, "question": question, "options": options})
            head = self.head + b"x-user-assertion: " + assertion.encode() + \
                b"\r\ncontent-length: "
            counted = self.measuring
            started = time.perf_counter_ns()
            try:
                async with asyncio.timeout(self.args.request_timeout_s):
                    status, payload = await conn.post(head, body)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                if counted and self.measuring:
                    name = type(exc).__name__
                    self.errors[name] = self.errors.get(name, 0) + 1
                continue
            elapsed = time.perf_counter_ns() - started
            if not (counted and self.measuring):
                self.sent_in_warm_up += not counted
                continue
            self.latency_ns.append(elapsed)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status != 200:
                continue
            self.ok_latency_ns.append(elapsed)
            self.texts[question] = self.texts.get(question, 0) + 1
            answer = orjson.loads(payload)
            timings = answer["latency_ms"]
            self.server_total.append(timings["total"])
            for stage, ms in timings.items():
                if stage != "total":
                    self.server_stage.setdefault(stage, []).append(ms)
            self.intents[answer["intent"]] = self.intents.get(answer["intent"], 0) + 1
            self.with_documents += answer["documents"] is not None
            if answer["degraded"]:
                self.degraded_requests += 1
                for part in answer["degraded"]:
                    self.degraded_parts[part] = self.degraded_parts.get(part, 0) + 1
        conn.close()

    async def main(self, probe: CpuProbe) -> dict:
        tasks = [asyncio.create_task(self.client(i)) for i in range(self.args.concurrency)]
        await asyncio.sleep(self.args.warmup_s)
        before = probe.sample()
        self.measuring = True
        await asyncio.sleep(self.args.duration_s)
        self.measuring = False
        after = probe.sample()
        self.stopping = True
        await asyncio.gather(*tasks)
        cpu = CpuProbe.delta(before, after)
        return self.summary(cpu)

    def summary(self, cpu: dict) -> dict:
        n = len(self.latency_ns)
        ok = self.statuses.get(200, 0)
        wall = cpu["wall_s"]
        rps = n / wall
        ms = sorted(x / 1e6 for x in self.latency_ns)
        repeated = sum(c for q, c in self.texts.items() if q in COMMON)
        return {
            "requests": n, "ok": ok, "statuses": {str(k): v for k, v in self.statuses.items()},
            "errors": self.errors, "requests_per_s": round(rps, 1),
            "requests_per_s_per_server_core": round(rps / cpu["server_cores"], 1)
            if cpu["server_cores"] else None,
            "requests_per_s_per_server_and_redis_core": round(
                rps / (cpu["server_cores"] + cpu["redis_cores"]), 1)
            if cpu["server_cores"] else None,
            "requests_per_s_per_machine_core": round(rps / cpu["machine_cores"], 1),
            "latency_ms": percentiles(ms),
            "ok_latency_ms": percentiles(sorted(x / 1e6 for x in self.ok_latency_ns)),
            "server_total_ms": percentiles(sorted(self.server_total)),
            "server_stage_ms": {s: percentiles(sorted(v)) for s, v in
                                self.server_stage.items()},
            "degraded_requests": self.degraded_requests,
            "complete_per_s": round((ok - self.degraded_requests) / wall, 1),
            "with_documents": self.with_documents,
            "degraded_parts": dict(sorted(self.degraded_parts.items(), key=lambda kv: -kv[1])),
            "intents": self.intents,
            "distinct_questions": len(self.texts),
            "repeated_phrasing_share": round(repeated / max(1, ok), 3),
            "cdf_ms": cdf(ms), "server_total_cdf_ms": cdf(sorted(self.server_total)),
            "cpu": cpu, "warm_up_requests": self.sent_in_warm_up,
        }


def percentiles(ms: list[float]) -> dict:
    if not ms:
        return {}

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2)

    return {"p50": at(0.50), "p90": at(0.90), "p95": at(0.95), "p99": at(0.99),
            "max": round(ms[-1], 2), "mean": round(sum(ms) / len(ms), 2), "n": len(ms)}


def cdf(ms: list[float], points: int = 400) -> list[list[float]]:
    """(latency, fraction at or below) at up to ``points`` quantiles, for the plot."""
    if not ms:
        return []
    out = []
    for j in range(points + 1):
        q = j / points
        out.append([round(ms[min(len(ms) - 1, int(q * (len(ms) - 1)))], 3), round(q, 4)])
    return out


class Assertions:
    """(user, assertion) pairs minted before the clock starts, used once each, in order; when
    they run out, a pair is minted on the spot (and counted)."""

    def __init__(self, settings, users: int, user_format: str, size: int, ttl_s: int,
                 rng: random.Random):
        from mercury.serving.local_idp import issue_assertion

        self.issue = issue_assertion
        self.settings, self.users, self.user_format = settings, users, user_format
        self.ttl_s, self.rng = ttl_s, rng
        started = time.perf_counter()
        self.pairs = deque(self._mint() for _ in range(size))
        self.mint_s = time.perf_counter() - started
        self.minted_on_the_fly = 0

    def _mint(self) -> tuple[str, str]:
        user = self.user_format.format(self.rng.randrange(self.users))
        return user, self.issue(self.settings, user, CALLER, ttl_s=self.ttl_s)

    def take(self) -> tuple[str, str]:
        if self.pairs:
            return self.pairs.popleft()
        self.minted_on_the_fly += 1
        return self._mint()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--world", type=Path, required=True,
                        help="JSON from bench/context_load.py: users, merchants")
    parser.add_argument("--scenario", choices=("features", "retrieval"), required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--assertions", type=int, default=100_000,
                        help="single-use assertions minted before the clock starts")
    parser.add_argument("--repeated", type=float, default=0.5,
                        help="retrieval: share of questions from the 40 common phrasings")
    parser.add_argument("--budget-ms", type=int, default=0, help="options.budget_ms, 0 = none")
    parser.add_argument("--request-timeout-s", type=float, default=10.0)
    parser.add_argument("--pids", default="", help="server process ids, comma separated")
    parser.add_argument("--redis-pid", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from mercury.config import load_settings

    world = orjson.loads(args.world.read_bytes())
    rng = random.Random(args.seed)
    users = [world["user_format"].format(i) for i in range(world["users"])]
    if args.scenario == "features":
        question = feature_question
        check_plans([a.format(item=i) for a in AFFORD for i in ITEMS] + list(SUMMARY), False)
    else:
        question = RetrievalQuestions(world["merchants"], args.repeated)
        check_plans(list(COMMON) + [t.format(m=m) for t in NOVEL for m in world["merchants"]],
                    True)
    from mercury.privacy.keys import load_keys
    from mercury.serving.auth import service_token

    settings = load_settings()
    # Assertions are single-use and live at most serving.identity.max_lifetime_s: a pool of
    # them, minted right before the warm-up, one taken per request (the rest on the fly).
    ttl = min(settings.serving.identity.max_lifetime_s,
              int(args.warmup_s + args.duration_s + 60))
    assertions = Assertions(settings, world["users"], world["user_format"], args.assertions,
                            ttl, rng)
    token = service_token(load_keys(settings), CALLER)
    print(f"  minted {len(assertions.pairs):,} assertions in {assertions.mint_s:.1f} s "
          f"(ttl {ttl} s)", flush=True)

    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with the serving group
        runner = asyncio.run
    probe = CpuProbe([int(p) for p in args.pids.split(",") if p], args.redis_pid)
    run = Run(args, users, assertions, token, question)
    result = runner(run.main(probe))
    result.update({"scenario": args.scenario, "concurrency": args.concurrency,
                   "duration_s": args.duration_s, "warmup_s": args.warmup_s,
                   "assertion_pool": args.assertions, "mint_s": round(assertions.mint_s, 1),
                   "assertions_minted_on_the_fly": assertions.minted_on_the_fly,
                   "repeated": args.repeated if args.scenario == "retrieval" else None,
                   "event_loop": runner.__module__})
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()

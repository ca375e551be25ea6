"""The load tool of ``bench/serving_vs_feast.py``: one closed loop of N clients against either
``mercury serve`` (``--side ours``) or ``feast serve`` (``--side feast``), in its own process.

The same tool and the same loop for both sides (``bench/context_load_client.py``'s raw-asyncio
HTTP/1.1 keep-alive ``Connection`` on uvloop, its ``CpuProbe`` and ``percentiles``): each client
holds one connection, picks a user uniformly at random among ``--users``, sends one request and
sends the next as soon as the answer is in. Only the body and the headers differ:

- ours: ``POST /v1/context`` with ``{"user_id": u, "question": "features", "options":
  {"parts": [...]}}``, the caller's service token and a fresh end-user assertion for ``u``
  (single use, so one per request). Before the clock starts the client mints ``--pool``
  (user, assertion) pairs with ``mercury.serving.local_idp.issue_assertion`` (the same
  settings, so the same keys as the server's JWKS); if the pool runs dry mid-run it mints on
  the fly, and says how many (that CPU is the client's, never the server's);
- Feast: ``POST /get-online-features`` with ``{"features": ["view:feature", ...],
  "entities": {"user_id": [u]}}``.

Non-200 answers (ours: 503 + Retry-After when shedding) are counted, never retried. For ours a
200 with a non-empty ``degraded`` list counts as degraded; for Feast a 200 where any feature's
status is not PRESENT counts as ``not_found``. At both ends of the measured window the CPU of
the server's processes, of Redis and of this client is read from /proc.

Usage (normally started by bench/serving_vs_feast.py):
  python bench/serving_vs_feast_client.py --side ours --port 8700 --users 1000000 \
      --user-format 'usr_load{:07d}' --parts features.spending,features.risk --pool 50000 \
      --pids 123 --redis-pid 99 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from context_load_client import Assertions, Connection, CpuProbe, percentiles  # noqa: E402

CALLER = "llm-gateway"


class Load:
    def __init__(self, args, request):
        self.args = args
        self.request = request  # (rng) -> (head, body)
        self.measuring = False
        self.stopping = False
        self.latency_ns: list[int] = []
        self.ok_latency_ns: list[int] = []
        self.server_total_ms: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.degraded = 0
        self.degraded_parts: dict[str, int] = {}
        self.not_found = 0
        self.reasons: dict[str, int] = {}
        self.response_bytes: list[int] = []
        self.warm_up_requests = 0

    def check(self, payload: bytes) -> None:
        """What a 200 says: degraded parts (ours), features not found (Feast)."""
        answer = orjson.loads(payload)
        self.response_bytes.append(len(payload))
        if self.args.side == "ours":
            self.server_total_ms.append(answer["latency_ms"]["total"])
            if answer["degraded"]:
                self.degraded += 1
                for part in answer["degraded"]:
                    self.degraded_parts[part] = self.degraded_parts.get(part, 0) + 1
        elif any(s != "PRESENT" for r in answer["results"] for s in r["statuses"]):
            self.not_found += 1

    def refusal(self, status: int, payload: bytes) -> None:
        """Why not answered, by the error text with its numbers blanked."""
        try:
            text = str(orjson.loads(payload).get("error", ""))[:120]
        except (orjson.JSONDecodeError, AttributeError):
            text = payload[:120].decode(errors="replace")
        reason = f"{status} " + re.sub(r"\d+", "#", text)
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    async def client(self, i: int) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        conn = Connection(self.args.host, self.args.port)
        while not self.stopping:
            head, body = self.request(rng)
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
                self.warm_up_requests += not counted
                continue
            self.latency_ns.append(elapsed)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.ok_latency_ns.append(elapsed)
                self.check(payload)
            else:
                self.refusal(status, payload)
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
        return self.summary(CpuProbe.delta(before, after))

    def summary(self, cpu: dict) -> dict:
        wall = cpu["wall_s"]
        n, ok = len(self.latency_ns), self.statuses.get(200, 0)
        cores = cpu["server_cores"]
        ms = sorted(x / 1e6 for x in self.latency_ns)
        ok_ms = sorted(x / 1e6 for x in self.ok_latency_ns)
        sizes = sorted(self.response_bytes)
        return {
            "requests": n, "ok": ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "refusals": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])),
            "requests_per_s": round(n / wall, 1),
            "ok_per_s": round(ok / wall, 1),
            "ok_per_s_per_server_core": round(ok / wall / cores, 1) if cores else None,
            "ok_per_s_per_server_and_redis_core": round(
                ok / wall / (cores + cpu["redis_cores"]), 1) if cores else None,
            "server_cpu_us_per_ok": round(1e6 * cpu["server_cpu_s"] / ok, 1) if ok else None,
            "client_cpu_us_per_request": round(1e6 * cpu["client_cpu_s"] / n, 1) if n else None,
            "not_ok_share": round((n - ok) / n, 4) if n else None,
            "latency_ms": percentiles(ms), "ok_latency_ms": percentiles(ok_ms),
            "server_total_ms": percentiles(sorted(self.server_total_ms)),
            "degraded": self.degraded,
            "complete_per_s_per_server_core": round(
                (ok - self.degraded) / wall / cores, 1) if cores else None,
            "degraded_share": round(self.degraded / ok, 4) if ok else None,
            "degraded_parts": dict(sorted(self.degraded_parts.items(), key=lambda kv: -kv[1])),
            "not_found": self.not_found,
            "response_bytes": {"p50": sizes[len(sizes) // 2], "max": sizes[-1]} if sizes else {},
            "cpu": cpu, "warm_up_requests": self.warm_up_requests,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=("ours", "feast"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--user-format", required=True, help="str.format pattern, e.g. "
                        "'usr_load{:07d}'")
    parser.add_argument("--parts", default="", help="ours: options.parts, comma separated")
    parser.add_argument("--features", default="",
                        help="feast: feature references view:feature, comma separated")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--pool", type=int, default=50_000,
                        help="ours: (user, assertion) pairs minted before the warm-up")
    parser.add_argument("--request-timeout-s", type=float, default=10.0)
    parser.add_argument("--pids", default="", help="server process ids, comma separated")
    parser.add_argument("--redis-pid", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    extra: dict = {}
    if args.side == "ours":
        from mercury.config import load_settings
        from mercury.privacy.keys import load_keys
        from mercury.serving.auth import service_token

        settings = load_settings()
        token = service_token(load_keys(settings), CALLER)
        # A lifetime covering minting, warm-up and the window, within the server's maximum.
        ttl = min(settings.serving.identity.max_lifetime_s,
                  int(args.warmup_s + args.duration_s + 60 + args.pool / 10_000))
        pool = Assertions(settings, args.users, args.user_format, args.pool, ttl,
                          random.Random(args.seed))
        print(f"  minted {args.pool:,} assertions in {pool.mint_s:.1f} s (ttl {ttl} s)",
              flush=True)
        parts = [p for p in args.parts.split(",") if p]
        base = (f"POST /v1/context HTTP/1.1\r\nhost: {args.host}:{args.port}\r\n"
                f"content-type: application/json\r\nauthorization: Bearer {token}\r\n"
                ).encode()
        options = {"parts": parts}

        def request(rng):
            user, assertion = pool.take()
            body = orjson.dumps({"user_id": user, "question": "features", "options": options})
            return base + b"x-user-assertion: " + assertion.encode() + \
                b"\r\ncontent-length: ", body
    else:
        refs = [f for f in args.features.split(",") if f]
        base = (f"POST /get-online-features HTTP/1.1\r\nhost: {args.host}:{args.port}\r\n"
                f"content-type: application/json\r\ncontent-length: ").encode()

        def request(rng):
            user = args.user_format.format(rng.randrange(args.users))
            return base, orjson.dumps({"features": refs, "entities": {"user_id": [user]}})

    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with the serving group
        runner = asyncio.run
    probe = CpuProbe([int(p) for p in args.pids.split(",") if p], args.redis_pid)
    result = runner(Load(args, request).main(probe))
    if args.side == "ours":
        extra = {"assertion_pool": args.pool, "mint_s": round(pool.mint_s, 1),
                 "assertions_left": len(pool.pairs),
                 "minted_on_the_fly": pool.minted_on_the_fly}
    result.update({"side": args.side, "concurrency": args.concurrency,
                   "duration_s": args.duration_s, "warmup_s": args.warmup_s,
                   "event_loop": runner.__module__, **extra})
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()

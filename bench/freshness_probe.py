"""The freshness probe on the local stack: the Flink SQL job (all six sets) over a fresh event
log, background traffic at ``--background-rate`` transactions/s, the probe writing a canary
every ``monitoring.probe_interval_s`` (5 s) for ``--minutes``, a real Prometheus scraping it.

Prints and keeps p50/p95/p99 of the canaries' lags two ways: from the probe's own observations,
and as Prometheus computes them from the scraped histogram (``histogram_quantile`` over the
run), plus the SLI's error ratio (the share of canaries later than 5 s).

    .venv/bin/python bench/freshness_probe.py [--minutes 10] [--background-rate 100]
    uv run --no-project --with matplotlib python bench/freshness_probe.py --plot-only

Needs the local Flink cluster (`make up`). Results: bench/results/freshness_probe.json, and a
PNG beside it.
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
REDIS_DB = 11


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--background-rate", type=int, default=100,
                        help="other transactions per second, from users of their own")
    parser.add_argument("--out", default="freshness_probe.json")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    result_path = REPO / "bench" / "results" / args.out
    if args.plot_only:
        plot(json.loads(result_path.read_text()), result_path.with_suffix(".png"))
        return

    from tests.conftest import free_port, write_config

    work = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    config = write_config(work, online_store={"db": REDIS_DB}, monitoring={
        "prometheus_port": free_port(), "probe_port": free_port(), "scrape_interval_s": 5,
        "evaluation_interval_s": 5})
    os.environ["MERCURY_CONFIG"] = str(config)

    import orjson
    import redis
    import requests
    from prometheus_client import CollectorRegistry, start_http_server

    from mercury.config import load_settings
    from mercury.eventlog import open_producer
    from mercury.monitoring.probe import FreshnessProbe, canary_record
    from mercury.online.factory import open_store
    from mercury.ops import online_job
    from mercury.ops.flink_rest import FlinkRestClient
    from mercury.stack import stack
    from mercury.stack.monitoring_servers import PrometheusServer

    settings = load_settings()
    stack.up(settings, ["redis", "postgres", "flink"])
    redis.Redis(port=settings.online_store.port, db=REDIS_DB).flushdb()
    prometheus = PrometheusServer(settings)
    prometheus.ensure_up()
    client = FlinkRestClient(settings.flink.rest_url)
    job_id = online_job.submit(client, config, "bench-freshness-probe", engine="sql")
    time.sleep(3)  # the sources list the (empty) folders once

    registry, stop = CollectorRegistry(), threading.Event()
    server, _ = start_http_server(settings.monitoring.probe_port, addr="127.0.0.1",
                                  registry=registry)
    observed: list[tuple[float, float]] = []  # (seconds since start, lag)
    started = time.monotonic()

    def background() -> None:
        with open_producer(settings, writer_id="background") as producer:
            n = 0
            while not stop.is_set():
                tick = time.monotonic()
                now_ms = int(time.time() * 1000)
                for _ in range(max(1, args.background_rate // 10)):
                    record = canary_record(f"usr_bg_{n % 20_000:05d}", now_ms)
                    producer.send("transactions", orjson.dumps(record), key=record["user_id"])
                    n += 1
                producer.flush()
                stop.wait(max(0.0, 0.1 - (time.monotonic() - tick)))

    def record(lags: list[float]) -> None:
        at = time.monotonic() - started
        observed.extend((at, lag) for lag in lags)
        print(f"{at:6.0f} s  canary lag " + ", ".join(f"{lag * 1000:.0f} ms" for lag in lags),
              flush=True)

    traffic = threading.Thread(target=background, daemon=True)
    if args.background_rate:
        traffic.start()
    load_before = os.getloadavg()
    with open_producer(settings, writer_id="canary") as producer:
        probe = FreshnessProbe(settings, producer, open_store(settings), registry)
        threading.Timer(args.minutes * 60, stop.set).start()
        probe.run(stop, on_observed=record)
    load_after = os.getloadavg()
    time.sleep(2 * settings.monitoring.scrape_interval_s)  # the last observations scraped

    window = f"{int(args.minutes * 60) + 30}s"
    from_prometheus = {}
    for q in (0.5, 0.95, 0.99):
        expr = (f"histogram_quantile({q}, sum by (le) (increase("
                f"mercury_online_write_lag_seconds_bucket[{window}])))")
        result = requests.get(f"{prometheus.url}/api/v1/query", params={"query": expr},
                              timeout=10).json()["data"]["result"]
        from_prometheus[f"p{int(q * 100)}_ms"] = round(float(result[0]["value"][1]) * 1000)
    late = requests.get(f"{prometheus.url}/api/v1/query", params={"query": (
        f"1 - sum(increase(mercury_online_write_lag_seconds_bucket{{le=\"5.0\"}}[{window}])) / "
        f"sum(increase(mercury_online_write_lag_seconds_count[{window}]))")},
        timeout=10).json()["data"]["result"]

    client.stop_with_savepoint(job_id)
    server.shutdown()
    prometheus.stop()
    stack.down(settings, ["flink"])  # only if this run started it (pid files in its run dir)
    lags_ms = sorted(lag * 1000 for _, lag in observed)
    cut = statistics.quantiles(lags_ms, n=100, method="inclusive")
    out = {"minutes": args.minutes, "background_rate_per_s": args.background_rate,
           "probe_interval_s": settings.monitoring.probe_interval_s,
           "discovery_interval_ms": settings.event_log.discovery_interval_ms,
           "mini_batch_ms": settings.flink.mini_batch_ms,
           "load_average_before": load_before, "load_average_after": load_after,
           "canaries": len(lags_ms), "lost": int(probe.lost._value.get()),
           "probe": {"p50_ms": round(cut[49]), "p95_ms": round(cut[94]),
                     "p99_ms": round(cut[98]), "max_ms": round(lags_ms[-1])},
           "prometheus": from_prometheus,
           "late_over_5s_share": float(late[0]["value"][1]) if late else None,
           "timeline": [(round(at, 1), round(lag * 1000)) for at, lag in observed]}
    print(json.dumps({k: v for k, v in out.items() if k != "timeline"}, indent=2))
    result_path.parent.mkdir(exist_ok=True)
    result_path.write_text(json.dumps(out, indent=2) + "\n")
    plot(out, result_path.with_suffix(".png"))


def plot(out: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("no matplotlib here: draw the PNG with `uv run --no-project --with matplotlib "
              "python bench/freshness_probe.py --plot-only`")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at, lag = zip(*out["timeline"], strict=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([t / 60 for t in at], lag, ".", color="tab:blue", label="canary lag")
    probe = out["probe"]
    ax.axhline(probe["p95_ms"], linestyle=":", color="tab:blue",
               label=f"p95 {probe['p95_ms']} ms (p50 {probe['p50_ms']} ms)")
    ax.axhline(5000, linestyle="--", color="tab:red", label="SLO: 5 s")
    ax.set_yscale("log")
    ax.set_xlabel("minutes")
    ax.set_ylabel("event log -> readable in Redis (ms)")
    ax.set_title(f"freshness probe, Flink SQL job, {out['background_rate_per_s']} other "
                 f"transactions/s, {out['canaries']} canaries")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()

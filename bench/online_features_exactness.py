"""The online-features job on N adversarial events: throughput per slot and exactness, for
each engine on the same events in one run.

Generates N events (default 1,000,000; the generator's default anomalies: 5% duplicates, 10%
out of order by up to 10 minutes, 2% late by 1 h to 3 days, 1% malformed, 3% with unknown new
fields), runs the job at parallelism 1 (one task slot) on the local cluster into its own
Redis database, once per engine (``--engines sql,python``: the Flink SQL job and today's
per-event Python operators), times each from submission until it has caught up, then holds
every user's values to the reference executor at four request times. The ratio printed is the
SQL engine's lines/s over the Python engine's.

    .venv/bin/python bench/online_features_exactness.py [--events 1000000] [--engines sql,python]
    uv run --no-project --with matplotlib python bench/online_features_exactness.py --plot-only

Results in bench/results/<--out> (JSON), and a PNG beside it (``--plot-only`` draws it from
the JSON where the main env has no matplotlib).
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
    parser.add_argument("--engines", default="sql,python")
    parser.add_argument("--out", default="online_features_exactness.json")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    result_path = REPO / "bench" / "results" / args.out
    if args.plot_only:
        plot(json.loads(result_path.read_text()), result_path.with_suffix(".png"))
        return

    from tests.conftest import write_config

    work = Path(tempfile.mkdtemp(prefix="bench-online-"))
    config = write_config(work, online_store={"db": REDIS_DB})
    os.environ["MERCURY_CONFIG"] = str(config)

    import redis

    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventReader
    from mercury.features.definition.compile import load_compiled
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
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
    runs = {}
    for engine in args.engines.split(","):
        redis.Redis(port=settings.online_store.port, db=REDIS_DB).flushdb()
        runs[engine] = _run(client, config, engine, lines, sets, streams, reader, settings)
        print(json.dumps(runs[engine], indent=2), flush=True)
    redis.Redis(port=settings.online_store.port, db=REDIS_DB).flushdb()
    out = {"events": args.events, "users": args.users, "lines": lines, "parallelism": 1,
           "load_average": os.getloadavg(), "engines": runs}
    if "sql" in runs and "python" in runs:
        out["sql_over_python"] = round(runs["sql"]["lines_per_s_per_slot"]
                                       / runs["python"]["lines_per_s_per_slot"], 2)
        print(f"SQL engine {out['sql_over_python']}x the Python engine's lines/s per slot")
    result_path.parent.mkdir(exist_ok=True)
    result_path.write_text(json.dumps(out, indent=2) + "\n")
    plot(out, result_path.with_suffix(".png"))
    sys.exit(0 if all(r["mismatches"] == 0 for r in runs.values()) else 1)


def _run(client, config, engine, lines, sets, streams, reader, settings) -> dict:
    from mercury.durations import DAY_MS
    from mercury.features.executors.agreement import arrivals_from_log, compare, last_arrival
    from mercury.online.factory import open_store
    from mercury.ops import online_job

    started = time.perf_counter()
    job_id = online_job.submit(client, config, f"bench-online-features-{engine}",
                               engine=engine)
    running = time.perf_counter()
    try:
        last_print = [0.0]

        def report(p):
            if time.perf_counter() - last_print[0] > 5:
                last_print[0] = time.perf_counter()
                print(f"  {engine}: {p.lines_read:,}/{lines:,} lines "
                      f"({p.lines_read / max(1e-9, time.perf_counter() - running):,.0f}/s)",
                      flush=True)

        online_job.wait_caught_up(client, job_id, lines, timeout_s=3600, report=report)
        caught_up = time.perf_counter()
    finally:
        # the SQL job is stopped, not cancelled (docs/STREAMING.md, "Known limits")
        if engine == "sql":
            client.stop_with_savepoint(job_id)
        else:
            client.cancel(job_id)
    flink_s = caught_up - running

    arrivals = arrivals_from_log(reader, streams)
    end = last_arrival(arrivals)
    result = compare(sets, open_store(settings), arrivals,
                     [end, end + 30 * 60_000, end + DAY_MS + 1, end + 8 * DAY_MS])
    print(result.summary()[:2000])
    return {"engine": engine, "submit_to_running_s": round(running - started, 1),
            "catch_up_s": round(flink_s, 1), "lines_per_s_per_slot": round(lines / flink_s),
            "values_compared": result.values, "entity_sets": result.entities,
            "mismatches": len(result.mismatches)}




def plot(out: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("no matplotlib here: draw the PNG with `uv run --no-project --with matplotlib "
              "python bench/online_features_exactness.py --plot-only`")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = out["engines"]
    names = list(runs)
    rates = [runs[n]["lines_per_s_per_slot"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = ["tab:blue", "tab:gray"][:len(names)]
    bars = ax.bar([f"{n} engine" for n in names], rates, color=colors)
    for bar, name in zip(bars, names, strict=True):
        run = runs[name]
        ax.annotate(f"{run['lines_per_s_per_slot']:,} lines/s\n{run['mismatches']} mismatches "
                    f"/ {run['values_compared']:,}", (bar.get_x() + bar.get_width() / 2,
                                                     bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.axhline(20_000, linestyle="--", color="tab:red")
    ax.annotate("goal: 20,000 lines/s per slot", (0, 20_000), va="bottom", color="tab:red",
                fontsize=9)
    ax.set_ylabel("raw lines per second, one slot")
    ax.set_title(f"online features, {out['lines']:,} adversarial lines, all six sets")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()

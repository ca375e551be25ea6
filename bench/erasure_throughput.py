"""Erasure throughput on the local stack: one request at a time (a scan of every store per
user) against one batch (a scan per store for all of them), on the same world, in one run.

It **erases users from the world it runs on**: run it on a demo world (`make demo`, or
``MERCURY_CONFIG`` pointing at another one) that can be regenerated. It takes the first
``2 x --users`` users of ``raw.transactions`` (sorted, so reruns on a fresh demo world pick
the same ones): the first half is erased one request at a time, the second half in one
batch. Users per hour are extrapolated from the measured seconds.

Results: bench/results/erasure_throughput.json (and .png beside it).
Usage: python bench/erasure_throughput.py --users 10 --yes
       uv run --no-project --with matplotlib python bench/erasure_throughput.py --plot-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "erasure_throughput.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10, help="users per side")
    parser.add_argument("--yes", action="store_true", help="yes, erase users of this world")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(RESULTS.read_text()), RESULTS.with_suffix(".png"))
        return 0
    if not args.yes:
        print("this erases users from the configured world; add --yes", file=sys.stderr)
        return 2

    from mercury.config import load_settings
    from mercury.gdpr import erasure
    from mercury.privacy import erasure_register as register

    settings = load_settings()
    users = _users(settings, 2 * args.users)
    one_by_one, batch = users[:args.users], users[args.users:]
    stamp = f"{int(time.time())}"
    sides = {}
    for name, label, group, batch_size in (("one request at a time", "single", one_by_one, 1),
                                           ("one batch", "batch", batch, len(batch))):
        prefix = f"BENCH-{stamp}-{label}-"
        for n, user in enumerate(group):
            erasure.request_erasure(settings, f"{prefix}{n}", user)
        started = time.perf_counter()
        pending = [r for r in register.pending(settings) if r.ticket.startswith(prefix)]
        for start in range(0, len(pending), batch_size):
            erasure.erase(settings, pending[start:start + batch_size],
                          progress=lambda line: print(line, flush=True))
        seconds = time.perf_counter() - started
        sides[name] = {"users": len(group), "seconds": round(seconds, 1),
                       "users_per_hour": round(len(group) / seconds * 3600)}
        print(f"{name}: {len(group)} users in {seconds:.1f} s "
              f"({sides[name]['users_per_hour']:,} users/hour)", flush=True)
    ratio = sides["one batch"]["users_per_hour"] / sides["one request at a time"]["users_per_hour"]
    print(f"batch / one at a time: {ratio:.1f}x")
    out = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
           "load_average": os.getloadavg(), "world": _world(settings), "sides": sides,
           "ratio_batch_over_one": round(ratio, 2)}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    plot(out, RESULTS.with_suffix(".png"))
    return 0


def _users(settings, n: int) -> list[str]:
    from mercury.lake.tables import catalog

    table = catalog(settings).load_table("raw.transactions")
    users = sorted(set(table.scan(selected_fields=("user_id",)).to_arrow()
                       .column("user_id").to_pylist()))
    if len(users) < n:
        raise SystemExit(f"the world has {len(users)} users with transactions; {n} needed")
    return users[:n]


def _world(settings) -> dict:
    from mercury.lake.tables import catalog

    lake = catalog(settings)
    rows = {}
    for namespace in lake.list_namespaces():
        for identifier in lake.list_tables(namespace):
            table = lake.load_table(identifier)
            rows[".".join(identifier)] = table.scan().count() if table.current_snapshot() else 0
    return {"lake_rows": rows}


def plot(out: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("no matplotlib here: draw the PNG with `uv run --no-project --with matplotlib "
              "python bench/erasure_throughput.py --plot-only`")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["sides"])
    rates = [out["sides"][n]["users_per_hour"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bars = ax.barh(names, rates, color=["#9aa5b1", "#2b6cb0"])
    ax.bar_label(bars, labels=[f"{r:,}/h" for r in rates], padding=4)
    ax.set_xlabel("users erased per hour (one worker, local stack)")
    ax.set_title(f"Erasure throughput: batch {out['ratio_batch_over_one']}x")
    ax.set_xlim(0, max(rates) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())

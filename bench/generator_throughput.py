"""Generator throughput on one core into the local event log, and its determinism.

Runs the generator on N events pinned to one CPU (fsync on, as in normal use), twice with the
same seed to check byte-identical output, and beside it a floor: writing the same lines with a
plain buffered file write and no simulation at all, so the ratio shows what the simulation
costs over raw I/O. There is no peer generator among the anchors (Feast, Chronon) to compare
with. Usage: python bench/generator_throughput.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from mercury.eventlog.file_log import FileEventProducer, FileEventReader
from mercury.generator.knobs import Knobs
from mercury.generator.run import progress_printer
from mercury.generator.traffic import TrafficGenerator

STREAMS = ("transactions", "user_activity", "risk_signals", "knowledge_documents")


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for stream in STREAMS:
        for path in FileEventReader(root).files(stream):
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def run_generator(events: int, root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    manifest = TrafficGenerator(Knobs(events=events, users=50_000, merchants=5_000, seed=1),
                                FileEventProducer(root, "bench"),
                                progress=progress_printer()).run()
    return time.perf_counter() - started, sum(manifest.lines.values())


def write_floor(root: Path, out: Path) -> float:
    """The same bytes, copied line by line through a plain buffered writer."""
    lines = [m.value for s in STREAMS for m in FileEventReader(root).read(s)]
    started = time.perf_counter()
    with open(out, "wb") as f:
        for line in lines:
            f.write(line)
            f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})  # one core, as the goal says
    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp, "a"), Path(tmp, "b")
        seconds, lines = run_generator(args.events, first)
        seconds_again, _ = run_generator(args.events, second)
        identical = digest(first) == digest(second)
        floor = write_floor(first, Path(tmp, "floor.jsonl"))
    best = min(seconds, seconds_again)
    rate = args.events / best
    print(f"\nevents: {args.events:,} ({lines:,} lines incl. duplicates), one core")
    verdict = "MET" if rate >= 50_000 else "MISSED"
    print(f"generator: {rate:,.0f} events/s (best of 2 runs: {seconds:.2f}s, "
          f"{seconds_again:.2f}s); goal >= 50,000 events/s: {verdict}")
    print(f"floor (plain write of the same lines): {lines / floor:,.0f} lines/s; "
          f"generator / floor time ratio: {best / floor:.1f}x")
    print(f"same seed, byte-identical output: {identical}")
    if not identical or rate < 50_000:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Spark, streaming and the reference executor on one generated stream: do they agree, and how
fast is each (a measurement, not a job).

    python bench/batch_agreement.py --events 1000000 --users 20000 [--workdir /tmp/agree]

The generator writes an adversarial event log (duplicates, late and out-of-order events,
malformed lines). The same arrivals then go through:

- the streaming executor (``OnlineExecutor``, the PyFlink job's logic, in plain Python on one
  core) into an in-memory online store, read back with the store's own ``decode``;
- the reference executor (``reference_values``), the oracle;
- the Spark executor (``point_in_time``, ``local[2]``), one query row per entity.

All three are read as of the newest arrival (the earliest time at which the streaming store is
complete) and every value of every entity and set is compared with ``consistency.same``.
Prints mismatches per executor and set, and throughputs; writes a JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/batch_agreement.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--workdir", default=None, help="where the generated stream goes")
    parser.add_argument("--examples", type=int, default=5, help="mismatches printed per set")
    return parser.parse_args(argv)


def stage(name: str):
    """Print a stage as it starts and return a function that reports its duration."""
    print(f"... {name}", flush=True)
    started = time.perf_counter()
    return lambda: time.perf_counter() - started


def run_streaming(sets, arrivals) -> tuple[object, dict]:
    """The streaming executor over every arrival, in log order, into a memory store."""
    from mercury.features.executors.reference import valid_record
    from mercury.features.executors.streaming.executor import DictState, OnlineExecutor
    from mercury.online.memory_store import MemoryOnlineStore

    executor, states, store, stats = OnlineExecutor(sets), {}, MemoryOnlineStore(), {
        "records": 0, "duplicates": 0}
    for stream, payload in arrivals:
        record = valid_record(stream, payload)
        if record is None:
            continue
        stats["records"] += 1
        for key, _ in executor.route(stream, record):
            outcome = executor.process(key, stream, record, states.setdefault(key, DictState()))
            stats["duplicates"] += outcome.duplicate
            store.write(outcome.writes)
    return store, stats


def streaming_values(sets, store, entities_by_ref: dict, as_of_ms: int) -> dict:
    from mercury.features.reader import decode
    from mercury.online import layout

    out = {}
    for fs in sets:
        for entity in entities_by_ref[fs.ref]:
            # Decoded even when the hash is gone (every tile slid out): the reader's answer
            # for that entity is what is compared, as consistency.compare does.
            (fields,) = store.read([layout.entity_key(fs, entity)])
            out[(fs.ref, entity)] = decode(fs, fields, as_of_ms)
    return out


def spark_values(spark, sets, arrivals, as_of_ms: int, timings: dict) -> dict:
    """Normalise in Python (timed apart), compute in Spark, decode the rows."""
    from mercury.features.executors.reference import valid_record
    from mercury.features.executors.spark import executor as sx

    by_stream: dict[str, list[dict]] = {}
    for stream, payload in arrivals:
        record = valid_record(stream, payload)
        if record is not None:
            by_stream.setdefault(stream, []).append(record)
    out = {}
    for fs in sets:
        started = time.perf_counter()
        table = sx.events_table(fs, by_stream.get(fs.source.stream, []))
        timings["normalise_s"] += time.perf_counter() - started
        started = time.perf_counter()
        entities = sorted(set(table["entity_id"].to_pylist()))
        queries = spark.createDataFrame([(e, e, as_of_ms) for e in entities],
                                        "query_id string, entity_id string, as_of_ms long")
        rows = sx.point_in_time(fs, spark.createDataFrame(table), queries).collect()
        spent = time.perf_counter() - started
        timings["spark_s"] += spent
        timings["spark_events"] += table.num_rows
        print(f"    spark {fs.ref:16} {table.num_rows:>9,} events {len(entities):>7,} entities "
              f"{spent:6.1f} s", flush=True)
        for row in rows:
            values = sx.decode_values(row["values"])
            if values is not None:
                out[(fs.ref, row["entity_id"])] = values
    return out


def mismatches(got: dict, want: dict, sets, limit: int) -> dict:
    """Per set: values compared, mismatches, and a few examples."""
    from mercury.features.executors.agreement import same

    report = {fs.ref: {"values": 0, "mismatches": 0, "examples": []} for fs in sets}
    for key in sorted(set(got) | set(want)):
        ref, entity = key
        mine, oracle = got.get(key) or {}, want.get(key) or {}
        for name in sorted(set(mine) | set(oracle)):
            entry = report[ref]
            entry["values"] += 1
            if not same(mine.get(name), oracle.get(name)):
                entry["mismatches"] += 1
                if len(entry["examples"]) < limit:
                    entry["examples"].append(f"{entity} {name}: {mine.get(name)!r} "
                                             f"!= reference {oracle.get(name)!r}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from mercury.config import load_settings
    from mercury.contracts import registry
    from mercury.eventlog.file_log import FileEventReader
    from mercury.features.definition.compile import load_compiled
    from mercury.features.executors.agreement import arrivals_from_log, last_arrival
    from mercury.features.executors.reference import reference_values
    from mercury.features.executors.spark.session import session, spark_config
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from tests.conftest import write_config

    work = Path(args.workdir or tempfile.mkdtemp(prefix="batch_agreement_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MERCURY_CONFIG"] = str(write_config(work))
    settings = load_settings()
    sets = [fs for fs in load_compiled() if registry.stream(fs.source.stream).event_id_field]
    done = stage(f"generate {args.events:,} events for {args.users:,} users")
    generate(settings, Knobs(events=args.events, users=args.users), with_postgres=False,
             show_progress=False)
    arrivals = arrivals_from_log(FileEventReader(settings.event_log.root),
                                 sorted({fs.source.stream for fs in sets}))
    as_of = last_arrival(arrivals)
    print(f"    {len(arrivals):,} lines in {done():.0f} s; as of {as_of}")

    done = stage("reference executor")
    want = reference_values(sets, arrivals, as_of)
    reference_s = done()
    entities_by_ref: dict[str, set] = {fs.ref: set() for fs in sets}
    for ref, entity in want:
        entities_by_ref[ref].add(entity)

    done = stage("streaming executor (OnlineExecutor, one core)")
    store, stats = run_streaming(sets, arrivals)
    streaming_s = done()
    streamed = streaming_values(sets, store, entities_by_ref, as_of)

    done = stage("spark executor (local[2])")
    spark = session(spark_config(settings))
    start_s = done()
    timings = {"normalise_s": 0.0, "spark_s": 0.0, "spark_events": 0}
    sparked = spark_values(spark, sets, arrivals, as_of, timings)
    spark.stop()

    report = {"streaming": mismatches(streamed, want, sets, args.examples),
              "spark": mismatches(sparked, want, sets, args.examples)}
    for executor, per_set in report.items():
        for ref, entry in per_set.items():
            print(f"{executor:9} {ref:16} {entry['values']:>10,} values "
                  f"{entry['mismatches']:>6,} mismatches")
            for example in entry["examples"]:
                print(f"    {example}")
    result = {
        "events": args.events, "users": args.users, "lines": len(arrivals),
        "records": stats["records"], "duplicates_dropped": stats["duplicates"],
        "reference_s": round(reference_s, 1), "streaming_s": round(streaming_s, 1),
        "streaming_records_per_s": round(stats["records"] / streaming_s),
        "spark_session_start_s": round(start_s, 1), "spark_normalise_s":
            round(timings["normalise_s"], 1), "spark_compute_s": round(timings["spark_s"], 1),
        "spark_set_events": timings["spark_events"],
        "spark_set_events_per_s_per_core": round(timings["spark_events"] / timings["spark_s"] / 2),
        "mismatches": {ex: sum(e["mismatches"] for e in per.values())
                       for ex, per in report.items()},
        "values": {ex: sum(e["values"] for e in per.values()) for ex, per in report.items()},
        "load_average": os.getloadavg(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                 capture_output=True, text=True).stdout.strip(),
    }
    print(json.dumps(result, indent=2))
    out = REPO / "bench" / "results" / f"batch_agreement_{result['commit']}.json"
    out.write_text(json.dumps({**result, "report": report}, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0 if not any(result["mismatches"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Training sets, ours against Feast's ``get_historical_features``: same data, same label rows,
same run.

1. A seeded stream of ``user_activity`` card freezes and unfreezes (the ``card_lock`` feature
   of ``engagement.v1`` is a ``Latest``: the newest event by event time, the semantics Feast's
   point-in-time join has). Event times are unique, most events arrive within 5 s, a share
   arrives late (1 h to 3 d after they happened, within ``MAX_LATENESS_MS``), and a share is
   sent twice (a retry arriving later). Every event is a freeze or an unfreeze, so both sides
   read the same rows: Feast cannot filter a source, and would otherwise get a smaller file.
2. Ours: the events frame (``spark_executor.EVENT_COLUMNS``) as Parquet, built with numpy and
   checked against ``spark_executor.events_table`` (the real normalisation) on a sample. Feast:
   the same events as its file source (``user_id, event_timestamp, event_type, event_ts_ms``).
   Label rows: random users (1% unknown ones) at random times, the same rows for both.
3. Feast (bench/feast_historical_side.py, in its own env): one feature view, ttl 60 days (longer
   than the stream, as ``card_lock`` has no max age), the default file offline store (dask);
   it times only ``get_historical_features(...).to_df()``.
4. Ours: ``mercury.features.offline.training.training_set`` on local Spark, timed from reading the
   two Parquet files to the whole result in pandas (``toPandas``). The JVM and session start are
   timed apart and not in the figure. Ours builds ``engagement.v1:card_lock``, the one feature Feast
   builds (``--whole-set``: all three features of the set).
4b. Ours on DuckDB (``training_duckdb.training_table``), in this process, before Spark starts:
   timed from reading the labels Parquet (DuckDB reads the events Parquet itself) to the result
   in pandas; the first build is cold (DuckDB's import, JSON extension and connection are in
   it), later ones reuse the connection. Its rows must equal Spark's. Then the whole set on
   DuckDB (``sessions``: a distinct count over 7d/30d windows) is checked against the
   reference executor on 1,000 random label rows.
5. Compare per label row ``card_lock``'s event type and event time with Feast's. A row where
   Feast returns an event that had not arrived by the label time is a leak (Feast has no
   arrival time) and is counted apart; every other row must be identical.

Results go to bench/results/training_set_vs_feast.json (and a PNG beside it when matplotlib
is importable; else ``--plot-only`` draws it from the JSON under ``uv run --with matplotlib``).
Ratios are Feast's default call over ours, cold (first build) and warm (best later build).
Usage: python bench/training_set_vs_feast.py [--events 1000000] [--labels 100000]
           [--users 50000] [--repeat 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

RESULTS = REPO / "bench" / "results" / "training_set_vs_feast.json"
FEAST_SIDE = REPO / "bench" / "feast_historical_side.py"
SET_REF = "engagement.v1"
FEATURE = "card_lock"
START_MS = 1_788_220_800_000  # 2026-09-01T00:00Z
DAY_MS, HOUR_MS = 86_400_000, 3_600_000
SPAN_MS = 30 * DAY_MS
TTL_DAYS = 60


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--labels", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--late-share", type=float, default=0.05)
    parser.add_argument("--duplicate-share", type=float, default=0.005)
    parser.add_argument("--unknown-share", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=1, help="builds of ours (the first is cold)")
    parser.add_argument("--whole-set", action="store_true",
                        help=f"build all of {SET_REF}, not only {FEATURE}")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--plot-only", action="store_true",
                        help="draw the PNG beside --results from its JSON, and stop")
    return parser.parse_args(argv)


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ---- the data --------------------------------------------------------------------------------

def stream(args, rng):
    """Columns of the stream in arrival order (numpy arrays), duplicates included."""
    import numpy as np

    n = args.events
    step = SPAN_MS // n
    event_ts = START_MS + np.arange(n, dtype=np.int64) * step + rng.integers(0, step, n)
    user = rng.integers(0, args.users, n)
    late = rng.random(n) < args.late_share
    delay = np.where(late, rng.integers(HOUR_MS, 3 * DAY_MS, n), rng.integers(0, 5_000, n))
    ident = np.arange(n)
    freeze = rng.random(n) < 0.5
    session = rng.integers(0, 20, n)
    again = rng.choice(n, int(n * args.duplicate_share), replace=False)
    retry_arrival = event_ts[again] + delay[again] + rng.integers(1, DAY_MS, len(again))
    columns = {"ident": np.concatenate([ident, ident[again]]),
               "arrival": np.concatenate([event_ts + delay, retry_arrival])}
    for name, values in (("event_ts", event_ts), ("user", user), ("freeze", freeze),
                         ("session", session)):
        columns[name] = np.concatenate([values, values[again]])
    order = np.argsort(columns["arrival"], kind="stable")
    return {name: values[order] for name, values in columns.items()}, late.sum(), len(again)


def user_name(i) -> str:
    return f"usr_{int(i):08d}"


def event_id(i) -> str:
    return f"00000000-0000-4000-8000-{int(i):012d}"  # a uuid, as the contract says


def records(columns, rows) -> list[dict]:
    """The stream's records for some rows, as ``user_activity`` carries them."""
    return [{"event_id": event_id(columns["ident"][r]), "user_id": user_name(columns["user"][r]),
             "session_id": f"s{int(columns['user'][r])}-{int(columns['session'][r])}",
             "event_type": "CARD_FREEZE" if columns["freeze"][r] else "CARD_UNFREEZE",
             "screen": None, "question_text": None, "platform": "IOS", "app_version": "5.1.0",
             "device_id": None, "event_ts": int(columns["event_ts"][r]),
             "ingest_ts": int(columns["arrival"][r])} for r in rows]


def events_table(feature_set, columns):
    """Ours: the events frame of the stream, built column-wise (1M Python normalisations
    would dominate the preparation, and are not what is measured)."""
    import numpy as np
    import pyarrow as pa

    from mercury.features.executors.spark.executor import row_schema

    users = [user_name(u) for u in columns["user"]]
    ids = [event_id(i) for i in columns["ident"]]
    values = {"event_type": np.where(columns["freeze"], "CARD_FREEZE", "CARD_UNFREEZE"),
              "session_id": [f"s{u}-{s}" for u, s in zip(columns["user"], columns["session"],
                                                          strict=True)]}
    row_type = row_schema(feature_set)
    row = pa.StructArray.from_arrays([pa.array(values[f.name], f.type) for f in row_type],
                                     fields=list(row_type))
    n = len(users)
    return pa.table({
        "entity_id": pa.array(users, pa.string()), "event_id": pa.array(ids, pa.string()),
        "event_ts": pa.array(columns["event_ts"], pa.int64()),
        "arrival_ts": pa.array(columns["arrival"], pa.int64()),
        "order_num": pa.array(columns["event_ts"], pa.int64()),
        "order_tie": pa.array(ids, pa.string()),
        "deleted": pa.array(np.zeros(n, bool), pa.bool_()),
        "log_pos": pa.array(np.arange(n), pa.int64()), "row": row})


def check_against_normalise(feature_set, columns, table, sample: int = 3_000) -> None:
    """The column-wise table equals what the real normalisation makes of the same records."""
    from mercury.features.executors.spark.executor import events_table as normalised

    want = normalised(feature_set, records(columns, range(sample)))
    got = table.slice(0, sample)
    if not got.equals(want):
        for name in want.column_names:
            if not got[name].equals(want[name]):
                raise SystemExit(f"the bench's events frame differs from events_table in {name}")
        raise SystemExit("the bench's events frame differs from events_table (schema)")


def label_rows(args, rng):
    import numpy as np

    n = args.labels
    users = [user_name(u) for u in rng.integers(0, args.users, n)]
    for k in np.flatnonzero(rng.random(n) < args.unknown_share):
        users[k] = f"usr_unknown_{k}"
    label_ts = START_MS + HOUR_MS + rng.integers(0, SPAN_MS, n)
    return {"row": np.arange(n), "entity_id": users, "label_ts": label_ts,
            "label": rng.integers(0, 2, n).astype(np.int8)}


# ---- the two sides ---------------------------------------------------------------------------

def run_feast(work: Path, columns, labels) -> tuple[dict, dict]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from online_vs_feast import feast_python

    source = work / "feast_source.parquet"
    pq.write_table(pa.table({
        "user_id": [user_name(u) for u in columns["user"]],
        "event_timestamp": pa.array(columns["event_ts"], pa.timestamp("ms", tz="UTC")),
        "created_timestamp": pa.array(columns["arrival"], pa.timestamp("ms", tz="UTC")),
        "event_type": pa.array(["CARD_FREEZE" if f else "CARD_UNFREEZE"
                                for f in columns["freeze"]], pa.string()),
        "event_ts_ms": pa.array(columns["event_ts"], pa.int64())}), source)
    entities = work / "feast_entities.parquet"
    pd.DataFrame({"row": labels["row"], "user_id": labels["entity_id"],
                  "event_timestamp": pd.to_datetime(labels["label_ts"], unit="ms", utc=True)}
                 ).to_parquet(entities)
    spec = {"project": "training_bench", "source": str(source), "entities": str(entities),
            "view": "card_lock", "features": [["event_type", "str"], ["event_ts_ms", "int"]],
            "ttl_days": TTL_DAYS}
    (work / "spec.json").write_text(json.dumps(spec))
    python = feast_python()
    out, values = work / "feast.json", work / "feast_values.parquet"
    subprocess.run([str(python), str(FEAST_SIDE), "--spec", str(work / "spec.json"),
                    "--workdir", str(work / "feast_repo"), "--out", str(out),
                    "--values", str(values)], check=True)
    stats = json.loads(out.read_text())
    return stats, {mode: pd.read_parquet(work / f"feast_values.{mode}.parquet")
                   for mode in stats["runs"]}


def run_ours(args, work: Path, feature_set) -> tuple[dict, object]:
    import pyspark

    from mercury.config import SparkConfig
    from mercury.features.executors.spark.session import session
    from mercury.features.offline.training import feature_column, training_set

    started = time.perf_counter()
    spark = session(SparkConfig(app_name="training-set-bench", driver_memory="4g"))
    spark.range(1).collect()
    jvm_s = time.perf_counter() - started
    print(f"  ours: Spark session up in {jvm_s:.1f} s (not counted)", flush=True)
    builds, frame = [], None
    for attempt in range(args.repeat):
        started = time.perf_counter()
        labels = spark.read.parquet(str(work / "labels.parquet"))
        events = spark.read.parquet(str(work / "events.parquet"))
        refs = [SET_REF] if args.whole_set else [f"{SET_REF}:{FEATURE}"]
        result = training_set(spark, None, labels, refs, events={SET_REF: events})
        frame = result.toPandas()
        seconds = time.perf_counter() - started
        builds.append(round(seconds, 2))
        print(f"  ours: build {attempt + 1}: {len(frame):,} rows in {seconds:.1f} s", flush=True)
    spark.stop()
    return ({"seconds": builds[0], "builds_s": builds, "jvm_and_session_s": round(jvm_s, 1),
             "spark": pyspark.__version__, "master": "local[2]", "shuffle_partitions": 4},
            frame[["row", feature_column(feature_set, FEATURE)]])


def run_duckdb(args, work: Path, feature_set) -> tuple[dict, object]:
    """Ours on DuckDB, in this process: the first build is cold (the DuckDB import, its JSON
    extension, the connection are in it), the others reuse the connection."""
    started = time.perf_counter()
    import duckdb
    import pyarrow.parquet as pq

    from mercury.features.offline.training import feature_column
    from mercury.features.offline.training_duckdb import training_table

    connection = duckdb.connect()
    connect_s = time.perf_counter() - started  # in build 1; reported apart as well
    builds, frame = [], None
    refs = [SET_REF] if args.whole_set else [f"{SET_REF}:{FEATURE}"]
    for attempt in range(args.repeat):
        if attempt:
            started = time.perf_counter()
        labels = pq.read_table(work / "labels.parquet")
        # DuckDB reads the events Parquet itself (only the columns the query needs).
        result = training_table(None, labels, refs,
                                events={SET_REF: str(work / "events.parquet")},
                                connection=connection)
        frame = result.to_pandas()
        seconds = time.perf_counter() - started
        builds.append(round(seconds, 2))
        print(f"  ours (DuckDB): build {attempt + 1}: {len(frame):,} rows in {seconds:.2f} s",
              flush=True)
    connection.close()
    return ({"seconds": builds[0], "builds_s": builds, "duckdb": duckdb.__version__,
             "import_and_connect_s": round(connect_s, 2), "threads": os.cpu_count()},
            frame[["row", feature_column(feature_set, FEATURE)]])


def windowed_check(work: Path, columns, labels, sample: int = 1_000, seed: int = 3) -> dict:
    """The whole of ``engagement.v1`` on DuckDB (``sessions``: a distinct count over 7d and
    30d windows, ``assistant_questions``, ``card_lock``) for every label row, timed; then
    ``sample`` random rows held to the reference executor, computed from the events of their
    users only (event ids never cross users here, so the global dedup is the same)."""
    import numpy as np
    import orjson
    import pyarrow.parquet as pq

    from mercury.features.executors.agreement import same
    from mercury.features.executors.spark.executor import reference_for
    from mercury.features.offline.training import feature_column
    from mercury.features.offline.training_duckdb import training_table

    feature_set = _set()
    started = time.perf_counter()
    table = training_table(None, pq.read_table(work / "labels.parquet"), [SET_REF],
                           events={SET_REF: str(work / "events.parquet")})
    seconds = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    rows = sorted(rng.choice(len(labels["row"]), sample, replace=False).tolist())
    users = [int(labels["entity_id"][r][4:]) for r in rows
             if not labels["entity_id"][r].startswith("usr_unknown_")]
    wanted = np.flatnonzero(np.isin(columns["user"], users))
    from mercury.features.executors.events import normalise

    events = [e for r in records(columns, wanted) if (e := normalise(feature_set, r))]
    expected = reference_for(feature_set, events, [(r, labels["entity_id"][r],
                                                    int(labels["label_ts"][r])) for r in rows])
    cells = {f.name: table[feature_column(feature_set, f.name)].to_pylist()
             for f in feature_set.features}
    compared, wrong, nonzero = 0, [], 0
    for r in rows:
        want = expected[r]
        got = {n: None if c[r] is None else orjson.loads(c[r]) for n, c in cells.items()}
        if want is None:
            compared += 1
            if any(v is not None for v in got.values()):
                wrong.append({"row": r, "ours": got, "reference": None})
            continue
        for name, value in want.items():
            compared += 1
            nonzero += name == "sessions" and value["7d"] > 0
            if not same(got[name], value):
                wrong.append({"row": r, "feature": name, "ours": got[name], "reference": value})
    print(f"  windowed check: {SET_REF} whole on DuckDB in {seconds:.2f} s; {sample:,} rows, "
          f"{compared:,} values against the reference, {len(wrong)} mismatches "
          f"({nonzero} rows with sessions 7d > 0)", flush=True)
    return {"set": SET_REF, "features": [f.name for f in feature_set.features],
            "build_s": round(seconds, 2), "rows_checked": sample, "values_checked": compared,
            "rows_with_sessions_7d": nonzero, "mismatches": len(wrong),
            "examples": wrong[:5]}


def same_rows(a, b, column: str) -> int:
    """Rows where two of our builds differ (decoded JSON, ``agreement.same``)."""
    import orjson

    from mercury.features.executors.agreement import same

    left = a.set_index("row").sort_index()[column].tolist()
    right = b.set_index("row").sort_index()[column].tolist()
    return sum(not same(None if x is None else orjson.loads(x), None if y is None else
                        orjson.loads(y)) for x, y in zip(left, right, strict=True))


# ---- comparing -------------------------------------------------------------------------------

def compare(ours, feast, labels, columns) -> dict:
    """Identical rows, leaks (Feast's event had not arrived by the label time), mismatches."""
    import numpy as np
    import orjson

    from mercury.features.offline.training import feature_column

    # The first arrival of each event (event times are unique), for the leak test.
    event_ts, arrival = columns["event_ts"], columns["arrival"]
    order = np.lexsort((arrival, event_ts))
    ts_sorted, first_arrival = event_ts[order], arrival[order]
    keep = np.concatenate([[True], ts_sorted[1:] != ts_sorted[:-1]])
    ts_sorted, first_arrival = ts_sorted[keep], first_arrival[keep]

    ours = ours.set_index("row").sort_index()
    if len(ours) != len(labels["row"]) or not (ours.index == labels["row"]).all():
        raise SystemExit(f"ours has {len(ours)} rows for {len(labels['row'])} label rows")
    # Feast's file store drops an entity row whose entity has events but none in range (its
    # TTL filter removes every joined row); such a row is counted, and must be null in ours.
    dropped = set(labels["row"].tolist()) - set(feast["row"].tolist())
    feast = feast.set_index("row").reindex(ours.index)
    text = ours[feature_column(_set(), FEATURE)].tolist()
    theirs_type = feast["event_type"].tolist()
    theirs_ts = feast["event_ts_ms"].tolist()
    counts = {"rows": len(text), "identical": 0, "both_null": 0, "leaks": 0, "mismatches": 0,
              "dropped_by_feast": len(dropped)}
    examples = {"leaks": [], "mismatches": [], "dropped_by_feast": []}
    for i, (mine_text, their_type, their_ts) in enumerate(
            zip(text, theirs_type, theirs_ts, strict=True)):
        mine = orjson.loads(mine_text) if mine_text is not None else None
        mine = (mine["event_type"], mine["ts"]) if mine else (None, None)
        their_type = their_type if isinstance(their_type, str) else None
        their_ts = None if their_ts is None or their_ts != their_ts else int(their_ts)
        theirs = (their_type, their_ts)
        label_ts = int(labels["label_ts"][i])
        row = {"row": i, "user": labels["entity_id"][i], "label_ts": label_ts,
               "ours": list(mine), "feast": list(theirs)}
        if i in dropped:
            if len(examples["dropped_by_feast"]) < 3:
                examples["dropped_by_feast"].append(row)
            if mine != (None, None):
                counts["mismatches"] += 1
                examples["mismatches"].append(row)
            continue
        if mine == theirs:
            counts["identical"] += 1
            counts["both_null"] += mine == (None, None)
            continue
        if their_ts is not None:
            k = int(np.searchsorted(ts_sorted, their_ts))
            arrived = int(first_arrival[k]) if k < len(ts_sorted) and \
                ts_sorted[k] == their_ts else None
            if arrived is not None and arrived > label_ts:
                counts["leaks"] += 1
                if len(examples["leaks"]) < 5:
                    examples["leaks"].append({**row, "feast_event_arrived": arrived})
                continue
        counts["mismatches"] += 1
        if len(examples["mismatches"]) < 10:
            examples["mismatches"].append(row)
    return {**counts, "examples": examples}


def _set():
    from mercury.features.definition.compile import load_compiled

    (feature_set,) = load_compiled([SET_REF])
    return feature_set


# ---- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.plot_only:
        plot(json.loads(Path(args.results).read_text()), Path(args.results).with_suffix(".png"))
        return 0
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mercury.features.offline.training import feature_column

    work = Path(args.workdir or tempfile.mkdtemp(prefix="training_vs_feast_"))
    work.mkdir(parents=True, exist_ok=True)
    command = "python bench/training_set_vs_feast.py " + " ".join(sys.argv[1:] if argv is None
                                                                  else argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = load_average()
    print(f"{started_at}  {load_before}", flush=True)
    rng = np.random.default_rng(args.seed)
    feature_set = _set()

    clock = time.perf_counter()
    columns, late, duplicates = stream(args, rng)
    table = events_table(feature_set, columns)
    check_against_normalise(feature_set, columns, table)
    pq.write_table(table, work / "events.parquet")
    labels = label_rows(args, rng)
    pq.write_table(pa.table(labels), work / "labels.parquet")
    print(f"data: {table.num_rows:,} events ({late:,} late, {duplicates:,} sent twice) for "
          f"{args.users:,} users, {args.labels:,} label rows, in {work} "
          f"({time.perf_counter() - clock:.0f} s)", flush=True)

    print("ours (DuckDB):", flush=True)
    duck_stats, duck = run_duckdb(args, work, feature_set)
    windowed = windowed_check(work, columns, labels)
    print("ours (Spark):", flush=True)
    ours_stats, ours = run_ours(args, work, feature_set)
    load_between = load_average()
    print("feast:", flush=True)
    feast_stats, feast = run_feast(work, columns, labels)
    load_after = load_average()

    results = {mode: compare(ours, frame, labels, columns) for mode, frame in feast.items()}
    duck_results = {mode: compare(duck, frame, labels, columns)
                    for mode, frame in feast.items()}
    duck_vs_spark = same_rows(duck, ours, feature_column(feature_set, FEATURE))
    default = feast_stats["runs"]["default"]
    ratio = default["seconds"] / ours_stats["seconds"]
    ratios = {name: {"cold": round(default["seconds"] / stats["builds_s"][0], 2),
                     "warm": round(default["seconds"] / min(stats["builds_s"][1:]), 2)
                     if len(stats["builds_s"]) > 1 else None}
              for name, stats in (("spark", ours_stats), ("duckdb", duck_stats))}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    report = {
        "command": command, "started_at": started_at, "commit": commit,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "uptime_before": load_before, "uptime_between": load_between,
                 "uptime_after": load_after},
        "data": {"events": table.num_rows, "distinct_events": args.events, "late": int(late),
                 "sent_twice": int(duplicates), "users": args.users, "labels": args.labels,
                 "feature": f"{SET_REF}:{FEATURE}", "whole_set": args.whole_set,
                 "feast_ttl_days": TTL_DAYS},
        "ours": ours_stats, "ours_duckdb": duck_stats, "feast": feast_stats,
        "feast_default_over_ours": round(ratio, 2), "feast_default_over": ratios,
        "comparison": results, "comparison_duckdb": duck_results,
        "duckdb_vs_spark_rows_differing": duck_vs_spark, "windowed_check_duckdb": windowed,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(report, indent=2) + "\n")

    print(f"\nours  {ours_stats['seconds']:8.1f} s  (Spark local[2]; session start "
          f"{ours_stats['jvm_and_session_s']} s not counted; builds {ours_stats['builds_s']})")
    for mode, run in feast_stats["runs"].items():
        print(f"feast {run['seconds']:8.1f} s  ({mode}; Feast {feast_stats['feast']}, "
              f"{feast_stats['offline_store']}, {run['rows']:,} rows returned)")
    print(f"ours  {duck_stats['seconds']:8.2f} s  (DuckDB {duck_stats['duckdb']}; builds "
          f"{duck_stats['builds_s']}; build 1 includes import and connection, "
          f"{duck_stats['import_and_connect_s']} s)")
    for name, ratio_of in ratios.items():
        print(f"ratio: Feast's default call takes {ratio_of['cold']:.2f}x our {name} time cold, "
              f"{ratio_of['warm']}x warm (best later build)")
    print(f"DuckDB and Spark differ on {duck_vs_spark:,} rows; windowed check: "
          f"{windowed['mismatches']} mismatches in {windowed['values_checked']:,} values")
    failed = bool(duck_vs_spark or windowed["mismatches"])
    for mode, result in [*(("Spark, " + m, r) for m, r in results.items()),
                         *(("DuckDB, " + m, r) for m, r in duck_results.items())]:
        print(f"values against Feast {mode}: {result['identical']:,} of {result['rows']:,} "
              f"rows identical ({result['both_null']:,} null on both sides), "
              f"{result['mismatches']:,} mismatches, {result['dropped_by_feast']:,} rows "
              "dropped by Feast (null in ours)")
        print(f"  leaks: {result['leaks']:,} Feast rows hold an event that had not arrived by "
              "the label time (excluded from the identical check)")
        for kind in ("mismatches", "leaks", "dropped_by_feast"):
            for example in result["examples"][kind][:2]:
                print(f"    {kind}: {example}")
        failed |= bool(result["mismatches"])
    print(f"-> {args.results}")
    plot(report, Path(args.results).with_suffix(".png"))
    return 1 if failed else 0


def plot(report: dict, path: Path) -> None:
    """Seconds per build, cold and warm, of each side (needs matplotlib: ``--plot-only``)."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not importable here: draw the plot with `uv run --no-project "
              "--python 3.11 --with matplotlib python bench/training_set_vs_feast.py "
              "--plot-only`")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feast = report["feast"]["runs"]
    bars = [("Feast default", feast["default"]["seconds"], None),
            ("Feast created<=t", feast["filter_by_created_timestamp"]["seconds"], None)]
    for name, key in (("ours Spark", "ours"), ("ours DuckDB", "ours_duckdb")):
        builds = report[key]["builds_s"]
        bars.append((name, builds[0], min(builds[1:]) if len(builds) > 1 else None))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    xs = range(len(bars))
    ax.bar([x - 0.2 for x in xs], [b[1] for b in bars], 0.4, label="cold (first call)")
    ax.bar([x + 0.2 for x in xs], [b[2] or 0 for b in bars], 0.4, label="warm (best later build)")
    for x, (_, cold, warm) in zip(xs, bars, strict=True):
        ax.text(x - 0.2, cold, f"{cold:.1f}", ha="center", va="bottom", fontsize=8)
        if warm:
            ax.text(x + 0.2, warm, f"{warm:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [b[0] for b in bars])
    ax.set_ylabel("seconds (lower is better)")
    data = report["data"]
    ax.set_title(f"training set: {data['events']:,} events, {data['labels']:,} labels "
                 f"({report['commit']}, {report['started_at']})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"-> {path}")


if __name__ == "__main__":
    raise SystemExit(main())

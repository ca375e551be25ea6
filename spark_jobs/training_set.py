"""Point-in-time training sets: label rows -> each with its feature values as of its own time.

    python -m spark_jobs.training_set --labels labels.parquet \\
        --feature-sets spending.v1,risk.v1 --output out/ \\
        [--timestamp-column label_ts] [--engine auto|spark|duckdb] [--config mercury.yaml]

``--labels`` is a Parquet file or folder, or a CSV with a header, with at least ``entity_id``
and the timestamp column (epoch ms, or a timestamp in Parquet); every other column (the label,
weights) is carried through unchanged. A feature set ref may pick one feature
(``engagement.v1:card_lock``). The output (Parquet, overwritten as a whole, so a re-run
changes nothing) has the label rows in their order, one column per feature,
``<set>__<feature>``, holding its JSON value, null when the entity had no counting event by
then. Events come from each set's lake table; the sets from their compiled specs.
``--engine`` (else ``offline.training_engine``) builds on DuckDB, in this process with no
Spark session, or on Spark; "auto" is DuckDB unless jobs run on EMR
(``mercury.features.offline.engine``). Both write the same rows.

``main`` only reads arguments and bindings; the transform is
``mercury.features.offline.training.training_set`` (its docstring says why leakage cannot happen).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mercury.features.offline.engine import ENGINES
from mercury.features.offline.training import TIMESTAMP_COLUMN
from mercury.features.offline.training import training_set as transform  # noqa: F401 (the job)
from spark_jobs import bindings, start


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spark_jobs.training_set", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", required=True, help="Parquet or CSV of label rows")
    parser.add_argument("--feature-sets", required=True,
                        help="comma-separated refs, NAME.vN or NAME.vN:FEATURE")
    parser.add_argument("--output", required=True, help="Parquet folder to (over)write")
    parser.add_argument("--timestamp-column", default=TIMESTAMP_COLUMN,
                        help=f"the label time column (default {TIMESTAMP_COLUMN})")
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="the engine (default: offline.training_engine)")
    parser.add_argument("--config", default=None, help="a mercury settings file (else the profile)")
    return parser.parse_args(argv)


def read_labels(spark, path: str):
    if path.lower().endswith(".csv"):
        # Types are inferred: an epoch-ms column reads as a long, the rest as they look.
        return spark.read.csv(path, header=True, inferSchema=True)
    return spark.read.parquet(path)


def run(spark, settings, labels_path: str, feature_set_refs: list[str], output_path: str,
        timestamp_column: str = TIMESTAMP_COLUMN, progress=None) -> int:
    """Build and write; returns the number of rows written (one per label row)."""
    say = progress or (lambda _text: None)
    labels = read_labels(spark, labels_path)
    say(f"labels: {labels_path} ({', '.join(labels.columns)})")
    result = transform(spark, settings, labels, feature_set_refs,
                       timestamp_column=timestamp_column)
    features = [c for c in result.columns if c not in labels.columns]
    say(f"building {len(features)} feature columns from {', '.join(feature_set_refs)} ...")
    result.write.mode("overwrite").parquet(output_path)
    return spark.read.parquet(output_path).count()


def run_duckdb(settings, labels_path: str, feature_set_refs: list[str], output_path: str,
               timestamp_column: str = TIMESTAMP_COLUMN) -> int:
    """The same build on DuckDB: the output folder is replaced by one Parquet file."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from mercury.features.offline.training_duckdb import training_table

    kind = "csv" if labels_path.lower().endswith(".csv") else "parquet"
    labels = ds.dataset(labels_path, format=kind).to_table()
    table = training_table(settings, labels, feature_set_refs, timestamp_column=timestamp_column)
    filesystem, folder = pafs.FileSystem.from_uri(output_path if "://" in output_path else
                                                  str(Path(output_path).absolute()))
    filesystem.create_dir(folder)
    filesystem.delete_dir_contents(folder)  # a re-run replaces, never adds
    pq.write_table(table, f"{folder}/part-00000.parquet", filesystem=filesystem)
    return table.num_rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    refs = [r.strip() for r in args.feature_sets.split(",") if r.strip()]
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    from mercury.features.offline.engine import choose

    settings = bindings(args.config)
    engine = choose(settings, args.engine)
    try:
        if engine == "duckdb":
            say(f"building on DuckDB: {', '.join(refs)}")
            written = run_duckdb(settings, args.labels, refs, args.output,
                                 args.timestamp_column)
        else:
            say("starting Spark")
            settings, spark = start(args.config)
            written = run(spark, settings, args.labels, refs, args.output,
                          args.timestamp_column, progress=say)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(f"{written:,} training rows ({', '.join(refs)}) -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

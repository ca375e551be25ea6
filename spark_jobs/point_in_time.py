"""Point-in-time feature values (training sets): query rows -> each one's values as of its time.

    python -m spark_jobs.point_in_time --feature-set spending.v1 \\
        --queries queries.parquet --output out/ [--config /abs/path/mercury.yaml]

``--queries`` is a Parquet file or folder, or a CSV with a header, of ``query_id, entity_id,
as_of_ms`` (epoch ms; each row its own as-of time). The output (Parquet, overwritten as a whole,
so a re-run changes nothing) has ``query_id, entity_id, as_of_ms, values``: ``values`` is the
JSON ``{feature: value}`` the reference executor gives, null for an entity with no event
counting by then. Events come from the set's lake table; the set from its compiled spec.

``main`` only reads arguments and bindings; the transform is
``mercury.features.executors.spark.executor.point_in_time``.
"""

from __future__ import annotations

import argparse
import sys

from mercury.features.executors.spark.executor import point_in_time as transform  # noqa: F401 (the job)
from spark_jobs import start

QUERY_SCHEMA = "query_id string, entity_id string, as_of_ms long"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spark_jobs.point_in_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature-set", required=True, help="NAME.vN of a compiled feature set")
    parser.add_argument("--queries", required=True, help="Parquet or CSV of query rows")
    parser.add_argument("--output", required=True, help="Parquet folder to (over)write")
    parser.add_argument("--config", default=None, help="a mercury settings file (else the profile)")
    return parser.parse_args(argv)


def read_queries(spark, path: str):
    if path.lower().endswith(".csv"):
        return spark.read.csv(path, header=True, schema=QUERY_SCHEMA)
    return spark.read.parquet(path).selectExpr("query_id", "cast(entity_id as string) entity_id",
                                               "cast(as_of_ms as long) as_of_ms")


def run(spark, settings, feature_set_ref: str, queries_path: str, output_path: str) -> int:
    """Compute and write; returns the number of query rows written."""
    from mercury.features.definition.compile import load_compiled
    from mercury.features.executors.spark.executor import lake_events_frame

    (feature_set,) = load_compiled([feature_set_ref])
    events = lake_events_frame(spark, settings, feature_set)
    result = transform(feature_set, events, read_queries(spark, queries_path))
    result.write.mode("overwrite").parquet(output_path)
    return spark.read.parquet(output_path).count()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings, spark = start(args.config)
    written = run(spark, settings, args.feature_set, args.queries, args.output)
    print(f"{args.feature_set}: {written:,} query rows -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

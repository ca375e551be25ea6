"""Feature history backfill: a set version's values per entity and day, into its Iceberg table.

    python -m spark_jobs.backfill --feature-set spending.v1 \\
        --start 2026-01-01 --end 2026-01-31 [--full] [--config /abs/path/mercury.yaml]

Computes the days of ``--start..--end`` (inclusive, UTC) that are new or whose values can have
changed since they were computed (a lake row added or replaced since), or all of them with
``--full``, and replaces exactly those days in ``<offline.namespace>.<set>_v<version>``. It
prints the days it computes and why (new / changed / forced), then a summary line. Re-running
is safe: with no change in the lake it computes nothing.

``main`` only reads arguments and bindings; the job is
``mercury.features.offline.history.backfill``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from mercury.features.offline.history import backfill as job  # noqa: F401 (the job)
from spark_jobs import start


class UsageError(ValueError):
    pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spark_jobs.backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature-set", required=True, help="NAME.vN of a compiled feature set")
    parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--end", required=True, help="last day, YYYY-MM-DD (UTC), inclusive")
    parser.add_argument("--full", action="store_true",
                        help="recompute every day of the range, changed or not")
    parser.add_argument("--config", default=None, help="a mercury settings file (else the profile)")
    parser.add_argument("--spec-digest", default=None,
                        help="refuse to run unless the compiled spec has this SHA-256 (the "
                             "digest a DAG run pinned)")
    return parser.parse_args(argv)


def checked(args: argparse.Namespace):
    """(feature set, start, end), or UsageError naming what is wrong; before Spark starts."""
    from mercury.features.definition.compile import CompileError, digest, load_one

    days = []
    for flag, text in (("--start", args.start), ("--end", args.end)):
        try:
            days.append(date.fromisoformat(text))
        except ValueError:
            raise UsageError(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None
    start, end = days
    if end < start:
        raise UsageError(f"the range {start}..{end} is empty: --end is before --start")
    ref = args.feature_set
    try:
        feature_set = load_one(ref)
    except CompileError as exc:
        raise UsageError(f"--feature-set {ref!r} is not a compiled feature set: {exc}") from None
    # A package built from other sources than the run planned with must not write history.
    if args.spec_digest and digest(feature_set) != args.spec_digest:
        raise UsageError(f"--spec-digest {args.spec_digest[:12]}: the packaged {ref} has "
                         f"digest {digest(feature_set)[:12]}; rebuild the package or re-plan")
    return feature_set, start, end


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        feature_set, first, last = checked(args)
    except UsageError as exc:
        print(f"spark_jobs.backfill: {exc}", file=sys.stderr)
        return 2
    settings, spark = start(args.config)
    # The job's last progress line is the summary.
    job(spark, settings, feature_set, first, last, full=args.full,
        progress=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

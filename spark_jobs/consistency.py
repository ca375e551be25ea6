"""Online/offline consistency: served values, or a version's online hashes, against Spark.

    python -m spark_jobs.consistency served --since 2026-11-21T00:00:00Z \\
        --until 2026-11-22T00:00:00Z [--feature-set spending.v1 ...] [--min-share 1.0] \\
        [--report out.json]
    python -m spark_jobs.consistency online --feature-set spending.v2 [--as-of-ms N] \\
        [--sample N] [--min-share 1.0] [--report out.json]

``served`` holds what the context API served in the time range (its audit records in the lake)
to the same definitions recomputed as of each request's time; ``online`` holds the online
hashes of one version, active or not, to the recompute as of one time (the promotion gate).
Prints one line per feature (matched, total, share); exits 1 when any feature is below
``--min-share`` (default ``offline.consistency_min_share``), naming it with examples; exits 2
when there is nothing to measure (no audit table, no events, an unknown feature set).

``--recompute-from DIR`` takes the definitions Spark recomputes with from another folder of
compiled specs: to check a changed definition against what was served or stored.

``main`` only reads arguments and bindings; the work is in
``mercury.features.lifecycle.consistency``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from mercury.features.lifecycle import consistency as job
from mercury.features.lifecycle.consistency_metrics import record_report
from spark_jobs import start


def _iso_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return round(moment.timestamp() * 1000)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spark_jobs.consistency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    served = commands.add_parser("served", help="served values (audit lake) against Spark")
    served.add_argument("--since", required=True, type=_iso_ms, help="request time from (ISO)")
    served.add_argument("--until", required=True, type=_iso_ms, help="request time to (ISO)")
    served.add_argument("--feature-set", action="append", default=None,
                        help="NAME.vN to measure (repeatable; default: every served set)")
    online = commands.add_parser("online", help="a version's online hashes against Spark")
    online.add_argument("--feature-set", required=True, help="NAME.vN of a compiled set")
    online.add_argument("--as-of-ms", type=int, default=None,
                        help="epoch ms (default: the newest arrival in the lake)")
    online.add_argument("--sample", type=int, default=None,
                        help="entities (default: offline.consistency_sample_entities)")
    for sub in (served, online):
        sub.add_argument("--min-share", type=float, default=None,
                         help="least share per feature (default: offline.consistency_min_share)")
        sub.add_argument("--report", default=None, help="write the report as JSON here")
        sub.add_argument("--recompute-from", default=None,
                         help="a folder of compiled specs for the Spark side")
        sub.add_argument("--config", default=None, help="a mercury settings file")
    args = parser.parse_args(argv)
    if args.command == "served" and args.until <= args.since:
        parser.error("--until must be after --since")
    return args


def _recompute_definitions(folder: str | None, refs: list[str]) -> dict:
    from mercury.features.definition.compile import load_compiled

    if folder is None:
        return {}
    return {fs.ref: fs for fs in load_compiled(refs or None, directory=Path(folder))}


def run(spark, settings, args: argparse.Namespace) -> job.ConsistencyReport:
    def progress(message: str) -> None:
        print(message, flush=True)

    if args.command == "served":
        refs = args.feature_set or []
        overrides = _recompute_definitions(args.recompute_from, refs)
        return job.measure_served(spark, settings, args.since, args.until,
                                  set_refs=args.feature_set, executor_feature_sets=overrides,
                                  progress=progress)
    from mercury.features.definition.compile import load_one
    from mercury.online.factory import open_store

    override = _recompute_definitions(args.recompute_from, [args.feature_set])
    with open_store(settings) as store:
        return job.measure_online(spark, settings, load_one(args.feature_set), store,
                                  as_of_ms=args.as_of_ms, sample=args.sample,
                                  executor_feature_set=override.get(args.feature_set),
                                  progress=progress)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from mercury.features.definition.compile import CompileError

    settings, spark = start(args.config)
    min_share = settings.offline.consistency_min_share if args.min_share is None \
        else args.min_share
    try:
        report = run(spark, settings, args)
    except (ValueError, CompileError) as exc:  # nothing to measure, or an unknown set
        print(f"consistency: {exc}", file=sys.stderr)
        return 2
    if not args.recompute_from:  # a what-if check of other definitions is not the score
        record_report(settings, report, time.time())  # the one Prometheus alerts on
    print("\n".join(report.table()))
    print(report.summary(min_share))
    if args.report:
        Path(args.report).write_text(report.to_json())
    return 0 if report.passes(min_share) else 1


if __name__ == "__main__":
    raise SystemExit(main())

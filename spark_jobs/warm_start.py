"""Warm start: a set version's online hashes and seam state from the lake, up to a cut.

    python -m spark_jobs.warm_start --feature-set spending.v2 --cut-ms 1764547200000 \\
        [--spec-digest SHA256] [--config /abs/path/mercury.yaml]

Overwrites the version's keys (a re-run writes the same); exits 2 when the lake has not
reached the cut or the set is unknown. ``main`` only reads arguments and bindings; the job is
``mercury.features.lifecycle.warm_start.backfill_online``.
"""

from __future__ import annotations

import argparse
import sys

from mercury.features.lifecycle.warm_start import backfill_online as job  # noqa: F401 (the job)
from spark_jobs import start


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spark_jobs.warm_start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature-set", required=True, help="NAME.vN of a compiled feature set")
    parser.add_argument("--cut-ms", required=True, type=int, help="arrival cut, epoch ms")
    parser.add_argument("--spec-digest", default=None,
                        help="refuse to run unless the compiled spec has this SHA-256")
    parser.add_argument("--config", default=None, help="a mercury settings file (else the profile)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from mercury.features.definition.compile import CompileError, digest, load_one
    from mercury.features.lifecycle.warm_start import LakeBehind

    try:
        feature_set = load_one(args.feature_set)
    except CompileError as exc:
        print(f"spark_jobs.warm_start: {exc}", file=sys.stderr)
        return 2
    if args.spec_digest and digest(feature_set) != args.spec_digest:
        print(f"spark_jobs.warm_start: --spec-digest {args.spec_digest[:12]} is not the "
              f"packaged {args.feature_set}'s {digest(feature_set)[:12]}", file=sys.stderr)
        return 2
    settings, spark = start(args.config)
    from mercury.online.factory import open_store

    try:
        with open_store(settings) as store:
            result = job(spark, settings, feature_set, args.cut_ms, store,
                         log=lambda line: print(line, flush=True))
    except LakeBehind as exc:
        print(f"spark_jobs.warm_start: {exc}", file=sys.stderr)
        return 2
    print(f"{feature_set.ref}: {result.entities:,} entities, {result.events:,} events "
          f"up to {args.cut_ms}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``mercury lake-compact``: commit the streaming job's staged part files to Iceberg.

``register(subparsers)`` adds the command to the ``mercury`` parser. It prints a line per
committed batch and a summary; it exits 1 when a staged file is malformed (nothing of its
batch is moved) or when files had to stay staged because some records cannot be keyed.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> argparse.ArgumentParser:
    # Builds the parser only: mercury.lake.compact (pyarrow, pyiceberg) loads when it runs.
    command = subparsers.add_parser(
        "lake-compact", help="commit staged validated and late events to Iceberg (idempotent)")
    command.add_argument("--batch-records", type=_positive, default=None,
                         metavar="N", help="lines per Iceberg commit, whole files "
                                           "(default: mercury.lake.compact.BATCH_RECORDS)")
    command.add_argument("--quiet", action="store_true", help="print the summary only")
    command.set_defaults(run=_run)
    return command


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _run(args) -> int:
    from mercury.config import load_settings
    from mercury.lake import compact

    settings = load_settings()

    def progress(batch: compact.CompactResult) -> None:
        print(f"batch: {batch.line()}", flush=True)

    try:
        result = compact.compact(settings, progress=None if args.quiet else progress,
                                 batch_records=args.batch_records or compact.BATCH_RECORDS)
    except compact.CompactError as exc:
        print(f"mercury lake-compact: {exc}", file=sys.stderr)
        return 1
    if not result.validated and not result.late:
        print(f"nothing to compact in {compact.staging_dir(settings)}")
        return 0
    for line in result.summary():
        print(line)
    if result.held_files:
        print(f"mercury lake-compact: {len(result.held_files)} file(s) stay staged: records "
              "that cannot be keyed (see above)", file=sys.stderr)
        return 1
    return 0

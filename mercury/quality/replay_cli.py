"""``mercury dlq replay --stream NAME [--dry-run]``: the dead-letter replay on the command line.

``register(subparsers)`` adds the ``dlq`` command to the ``mercury`` parser (mercury/cli.py).
Prints progress while it runs and a summary at the end: replayed, already replayed, and the
records still failing per rule.
"""

from __future__ import annotations

import argparse
import sys

from mercury.errors import CommandError


def register(subparsers) -> argparse.ArgumentParser:
    dlq = subparsers.add_parser("dlq", help="dead letters: replay them once the cause is fixed")
    actions = dlq.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay", help="re-validate a stream's dead letters with the current contract and "
                       "produce those that pass again (idempotent)")
    replay.add_argument("--stream", required=True, help="the original stream, e.g. transactions")
    replay.add_argument("--dry-run", action="store_true",
                        help="only count what would be replayed; produce and record nothing")
    replay.set_defaults(run=_replay)
    return dlq


def _replay(args) -> int:
    from mercury.config import load_settings
    from mercury.quality.replay import ReplayError, progress_printer, replay_dead_letters

    try:
        result = replay_dead_letters(load_settings(), args.stream, dry_run=args.dry_run,
                                     progress=progress_printer(sys.stderr))
    except (ReplayError, KeyError) as exc:
        raise CommandError(exc.args[0] if exc.args else str(exc)) from exc
    print(("dry run: " if args.dry_run else "") + result.summary())
    return 0

"""``mercury cdc``: pump profile changes into the event log, show the slot, or reset it.

``register`` adds the command to the ``mercury`` parser. Failures print what to fix and exit 1.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    cdc = subparsers.add_parser("cdc", help="profile CDC: Postgres user_profiles -> "
                                            "user_profile_cdc")
    actions = cdc.add_subparsers(dest="cdc_action", required=True, metavar="ACTION")

    pump = actions.add_parser("pump", help="write new profile changes to the event log "
                                           "(the first run snapshots the table)")
    pump.add_argument("--follow", action="store_true", help="keep pumping until Ctrl-C")
    pump.add_argument("--max-changes", type=_positive, default=10_000,
                      help="messages per batch (the slot stops at a transaction end)")
    pump.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                      help="with --follow: wait between polls that found nothing")
    pump.add_argument("--idle-exit", type=_positive, default=None, metavar="POLLS",
                      help="with --follow: stop after this many empty polls in a row")
    pump.set_defaults(run=_pump)

    actions.add_parser("status", help="slot position and the WAL it holds").set_defaults(
        run=_status)
    actions.add_parser("reset", help="drop the slot and publication (next pump snapshots "
                                     "again)").set_defaults(run=_reset)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _guarded(action):
    """Runs an action; CDC and Postgres errors become a message and exit code 1."""
    import psycopg

    from mercury.cdc.profiles import CdcError
    from mercury.config import load_settings
    from mercury.stack.postgres_server import PostgresServer

    try:
        settings = load_settings()
        health = PostgresServer(settings).health()
        if not health.ok:
            raise CdcError(f"{health.detail}. Start it with `mercury stack up --only postgres`")
        return action(settings)
    except (CdcError, psycopg.Error) as exc:
        print(f"mercury cdc: {str(exc).strip()}", file=sys.stderr)
        return 1


def _pump(args) -> int:
    from mercury.cdc import profiles

    def run(settings) -> int:
        if not args.follow:
            print(profiles.pump_once(settings, max_changes=args.max_changes).line())
            return 0
        stop = profiles.stop_when_idle(args.idle_exit) if args.idle_exit else None

        def progress(batch):
            if batch.changes or batch.snapshot_rows:
                print(batch.line(), flush=True)

        try:
            total = profiles.follow(settings, max_changes=args.max_changes,
                                    poll_interval_s=args.poll_interval, stop=stop,
                                    on_batch=progress)
        except KeyboardInterrupt:
            print("stopped; the slot resumes after the last batch written")
            return 0
        print(f"total: {total.line()}")
        return 0

    return _guarded(run)


def _status(args) -> int:
    from mercury.cdc import profiles

    def run(settings) -> int:
        state = profiles.status(settings)
        for key, value in state.items():
            print(f"{key}: {value}")
        return 0 if state["slot_exists"] else 1

    return _guarded(run)


def _reset(args) -> int:
    from mercury.cdc import profiles

    def run(settings) -> int:
        for line in profiles.reset(settings):
            print(line)
        return 0

    return _guarded(run)

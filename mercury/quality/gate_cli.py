"""``mercury quality gate|release|held``: the hourly anomaly gate on the command line.

``gate`` runs the promoting step for one arrival hour (exit 1 and the rules when it is
quarantined); ``release`` is the documented override, recorded with who and why; ``held``
lists the quarantined hours. docs/QUALITY.md, "Anomaly gate".
"""

from __future__ import annotations

import argparse
import getpass
import os
from datetime import UTC, datetime

from mercury.errors import CommandError


def register(subparsers) -> argparse.ArgumentParser:
    quality = subparsers.add_parser("quality", help="the hourly anomaly gate: gate, release, "
                                                    "list quarantined hours")
    actions = quality.add_subparsers(dest="quality_action", required=True, metavar="ACTION")
    gate = actions.add_parser("gate", help="gate one arrival hour of a stream (promote it, "
                                           "or quarantine it naming the rules)")
    _hour_options(gate)
    gate.set_defaults(run=_gate)
    release = actions.add_parser("release", help="override a quarantine (recorded)")
    _hour_options(release)
    release.add_argument("--reason", required=True,
                         help="why the hour is fine after all (kept with the release)")
    release.add_argument("--by", help="who releases it (default: $MERCURY_OPERATOR, else "
                                      "the login name)")
    release.set_defaults(run=_release)
    held = actions.add_parser("held", help="list quarantined hours and their rules")
    held.add_argument("--stream", help="only this stream")
    held.set_defaults(run=_held)
    return quality


def _hour_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", required=True, help="a gated stream, e.g. transactions")
    parser.add_argument("--hour", required=True, type=parse_hour,
                        help="the arrival hour, UTC: 2026-11-08T10:00Z (or epoch ms)")


def parse_hour(text: str) -> int:
    """``2026-11-08T10:00Z`` / ``2026-11-08T10`` / epoch ms -> the hour's start in epoch ms."""
    if text.isdigit():
        value = int(text)
    else:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an hour: write it as 2026-11-08T10:00Z") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = int(when.timestamp() * 1000)
    if value % 3_600_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not the start of an hour")
    return value


def _gate(args) -> int:
    from mercury.config import load_settings
    from mercury.quality.hour_gate import HourQuarantined, hour_label, promote_hour

    try:
        result = promote_hour(load_settings(), args.stream, args.hour)
    except HourQuarantined as exc:
        raise CommandError(str(exc)) from exc
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    verdict = result.verdict
    print(f"{args.stream} {hour_label(args.hour)}: {result.status} "
          f"(baseline {verdict.baseline})")
    for note in verdict.notes:
        print(f"  note: {note}")
    return 0


def _release(args) -> int:
    from mercury.config import load_settings
    from mercury.quality.hour_gate import hour_label, release_hour
    from mercury.quality.quarantine import NotQuarantined

    by = args.by or os.environ.get("MERCURY_OPERATOR") or _login()
    try:
        done = release_hour(load_settings(), args.stream, args.hour, args.reason, by)
    except (NotQuarantined, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    rules = ", ".join(b["rule"] for b in done.breaches)
    print(f"{args.stream} {hour_label(args.hour)}: released by {by} over {rules}")
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:  # a container user without a passwd entry
        raise CommandError("say who releases the hour: --by NAME (or MERCURY_OPERATOR)") from exc


def _held(args) -> int:
    from mercury.config import load_settings
    from mercury.quality import quarantine
    from mercury.quality.hour_gate import breach_line, hour_label

    settings = load_settings()
    with quarantine.connect(settings) as conn:
        held = quarantine.quarantined(conn, settings, args.stream)
    for hour in held:
        print(f"{hour.stream} {hour_label(hour.hour_ms)}")
        for breach in hour.breaches:
            print(f"  {breach_line(breach)}")
    if not held:
        print("no quarantined hours")
    return 0

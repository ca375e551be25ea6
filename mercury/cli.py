"""The ``mercury`` command: a table of contents of what the platform can be asked to do.

Every failure exits non-zero with a message that says what to fix.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from mercury.config import ConfigError
from mercury.errors import CommandError, StackError
from mercury.eventlog.base import EventLogError
from mercury.generator.knobs import KnobError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except (CommandError, ConfigError, StackError, KnobError, EventLogError) as exc:
        # Each of these carries a message that says what to fix; anything else is a bug.
        print(f"mercury {args.command}: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mercury", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = commands.add_parser("stack", help="start, check or stop the local stack")
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument("--only", help="comma-separated: redis,postgres,flink,airflow,"
                                      "node-exporter,alertmanager,prometheus")
    stack.set_defaults(run=_stack)

    gen = commands.add_parser("generate", help="write a seeded MercuryPay world to the event log")
    _generator_options(gen)
    gen.set_defaults(run=_generate)

    contracts = commands.add_parser("contracts", help="check schemas, data classes, registry")
    contracts.add_argument("action", choices=("check",))
    contracts.set_defaults(run=_contracts)

    lake = commands.add_parser("lake", help="validate a stream into the lake (bad -> DLQ)")
    lake.add_argument("action", choices=("load",))
    lake.add_argument("--stream", default="transactions")
    lake.set_defaults(run=_lake)

    from mercury.batch import cli as batch_cli
    from mercury.cdc import cli as cdc_cli
    from mercury.features import cli as features_cli
    from mercury.gdpr import cli as gdpr_cli
    from mercury.lake import compact_cli
    from mercury.monitoring import cli as monitoring_cli
    from mercury.ops import cli as flink_cli
    from mercury.quality import gate_cli, replay_cli
    from mercury.retrieval import cli as knowledge_cli
    from mercury.serving import cli as serving_cli
    from mercury.warehouse import cli as warehouse_cli

    features_cli.register(commands)
    batch_cli.register(commands)
    cdc_cli.register(commands)
    compact_cli.register(commands)
    replay_cli.register(commands)
    gate_cli.register(commands)
    flink_cli.register(commands)
    knowledge_cli.register(commands)
    monitoring_cli.register(commands)
    warehouse_cli.register(commands)
    gdpr_cli.register(serving_cli.register(commands))  # erase, export: privacy actions

    demo = commands.add_parser("demo", help="the main job end to end on the local defaults")
    _generator_options(demo, default_events=200_000)
    demo.add_argument("--skip-airflow", action="store_true",
                      help="do not start Airflow standalone (slow to start)")
    demo.set_defaults(run=_demo)
    return parser


def _argument_type(parse):
    """Let argparse print our parser's own message instead of 'invalid value'."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = parse.__name__
    return convert


def _generator_options(p: argparse.ArgumentParser, default_events: int = 100_000) -> None:
    from mercury.generator.knobs import parse_duration, parse_range

    parse_duration, parse_range = _argument_type(parse_duration), _argument_type(parse_range)

    p.add_argument("--events", type=int, default=default_events, help="distinct events to create")
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--merchants", type=int, default=800)
    p.add_argument("--documents", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", type=_utc_ms, default=None,
                   help="event time of the first event, ISO 8601 (default 2026-11-01T00:00Z)")
    p.add_argument("--span", type=parse_duration, default=None, help="event-time window (7d)")
    p.add_argument("--duplicate-rate", type=float, default=0.05)
    p.add_argument("--out-of-order-rate", type=float, default=0.10)
    p.add_argument("--max-skew", type=parse_duration, default=None, help="e.g. 10m")
    p.add_argument("--late-rate", type=float, default=0.02)
    p.add_argument("--lateness", type=parse_range, default=None, help="MIN..MAX, e.g. 1h..3d")
    p.add_argument("--evolved-rate", type=float, default=0.03)
    p.add_argument("--malformed-rate", type=float, default=0.01)
    p.add_argument("--no-postgres", action="store_true", help="do not write profile tables")
    p.add_argument("--manifest", type=Path, default=None)


def _utc_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add Z or +00:00")
    return int(moment.timestamp() * 1000)


def _knobs(args):
    from mercury.generator.knobs import Knobs

    given = {"events": args.events, "users": args.users, "merchants": args.merchants,
             "documents": args.documents, "seed": args.seed,
             "duplicate_rate": args.duplicate_rate, "out_of_order_rate": args.out_of_order_rate,
             "late_rate": args.late_rate, "evolved_rate": args.evolved_rate,
             "malformed_rate": args.malformed_rate}
    optional = {"start_ms": args.start, "span_ms": args.span, "max_skew_ms": args.max_skew}
    given.update({k: v for k, v in optional.items() if v is not None})
    if args.lateness is not None:
        given["lateness_min_ms"], given["lateness_max_ms"] = args.lateness
    return Knobs(**given)


def _settings():
    from mercury.config import load_settings

    return load_settings()


def _stack(args) -> int:
    from mercury.stack import stack

    settings = _settings()
    only = args.only.split(",") if args.only else None
    if args.action == "up":
        stack.up(settings, only)
        return 0
    if args.action == "down":
        for line in stack.down(settings, only):
            print(line)
        return 0
    report = stack.status(settings, only)
    for health in report:
        print(health.line())
    return 0 if all(h.ok for h in report) else 1


def _generate(args) -> int:
    from mercury.generator.run import generate

    settings = _settings()
    if not args.no_postgres:
        _require_postgres(settings)
    result = generate(settings, _knobs(args), args.manifest, with_postgres=not args.no_postgres)
    counts = result.manifest.counts()
    print(f"{sum(counts['generated'].values()):,} events ({sum(counts['lines'].values()):,} "
          f"lines) in {result.seconds:.1f}s = {result.events_per_s:,.0f} events/s")
    print(f"manifest: {result.manifest_path}")
    return 0


def _require_postgres(settings) -> None:
    from mercury.stack.postgres_server import PostgresServer

    health = PostgresServer(settings).health()
    if not health.ok:
        raise CommandError(f"{health.detail}. Start it with `make up` (or pass --no-postgres)")


def _contracts(args) -> int:
    from mercury.contracts.check import check_everything

    problems = check_everything()
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        return 1
    print("contracts ok: every field has a data class, every version is compatible, "
          "the registry has no dangling references")
    return 0


def _lake(args) -> int:
    from mercury.lake.load import load_stream

    report = load_stream(_settings(), args.stream)
    print(report.summary())
    return 0


def _demo(args) -> int:
    from mercury.demo import run_demo

    failures = run_demo(_settings(), _knobs(args), with_airflow=not args.skip_airflow,
                        with_postgres=not args.no_postgres)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

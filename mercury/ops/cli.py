"""``mercury flink deployment [NAME]``: a streaming job's deployment record, as every worker
sees it in the shared operational store (what runs, with which arguments, what it restored
from, the savepoint the next deploy restores). For on-call: no database client needed."""

from __future__ import annotations

import argparse

from mercury.errors import CommandError


def register(subparsers) -> argparse.ArgumentParser:
    flink = subparsers.add_parser("flink", help="the streaming jobs' deployment records")
    actions = flink.add_subparsers(dest="flink_action", required=True, metavar="ACTION")
    show = actions.add_parser("deployment", help="print a job's deployment record (JSON)")
    show.add_argument("job_name", nargs="?", default="online-features")
    show.set_defaults(run=_deployment)
    return flink


def _deployment(args) -> int:
    import dataclasses

    import orjson

    from mercury.config import load_settings
    from mercury.ops.deployments import DeploymentError, load

    settings = load_settings()
    try:
        record = load(settings, args.job_name)
    except DeploymentError as exc:
        raise CommandError(str(exc)) from exc
    if record is None:
        raise CommandError(f"no deployment of {args.job_name!r} is recorded (in "
                           f"{settings.ops_state.schema_name}.flink_deployments)")
    print(orjson.dumps(dataclasses.asdict(record), option=orjson.OPT_INDENT_2).decode())
    return 0

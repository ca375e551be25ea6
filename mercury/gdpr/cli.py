"""``mercury privacy erase|request-erasure|erase-pending|evidence|export``: the data subject's
rights (GDPR Art. 15 and 17) from the command line."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from mercury.errors import CommandError


def register(actions: argparse._SubParsersAction[Any]) -> None:
    erase = actions.add_parser("erase", help="erase a user from every store now, with evidence")
    erase.add_argument("--user", required=True, help="the user id")
    erase.add_argument("--request", required=True, help="the erasure request's ticket id")
    erase.set_defaults(run=_erase)
    request = actions.add_parser("request-erasure",
                                 help="register a request; the gdpr_erasure DAG erases it")
    request.add_argument("--user", required=True)
    request.add_argument("--request", required=True)
    request.set_defaults(run=_request)
    pending = actions.add_parser("erase-pending", help="erase every registered request")
    pending.set_defaults(run=_erase_pending)
    show = actions.add_parser("evidence", help="the deletion evidence of a request, as JSON")
    show.add_argument("--request", required=True)
    show.set_defaults(run=_evidence)
    export = actions.add_parser("export", help="all that is stored about a user, as JSON")
    export.add_argument("--user", required=True)
    export.add_argument("--out", help="a file (default: standard output)")
    export.set_defaults(run=_export)


def _erase(args: argparse.Namespace) -> int:
    from mercury.config import load_settings
    from mercury.gdpr import erasure

    settings = load_settings()
    request = erasure.request_erasure(settings, args.request, args.user)
    if request.user_id is None:
        raise CommandError(f"request {args.request} was completed already; "
                           f"`mercury privacy evidence --request {args.request}` shows it")
    erasure.erase(settings, [request])
    return 0


def _request(args: argparse.Namespace) -> int:
    from mercury.config import load_settings
    from mercury.gdpr import erasure

    request = erasure.request_erasure(load_settings(), args.request, args.user)
    print(f"request {request.ticket} registered, due {request.due_at:%Y-%m-%d}")
    return 0


def _erase_pending(args: argparse.Namespace) -> int:
    from mercury.config import load_settings
    from mercury.gdpr import erasure

    erasure.erase_pending(load_settings())
    return 0


def _evidence(args: argparse.Namespace) -> int:
    from mercury.config import load_settings
    from mercury.gdpr import evidence

    rows = evidence.read(load_settings(), args.request)
    if not rows:
        raise CommandError(f"no evidence for request {args.request}")
    print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mercury.config import load_settings
    from mercury.gdpr.access import export_subject, to_json

    document = to_json(export_subject(load_settings(), args.user))
    if args.out:
        Path(args.out).write_bytes(document)
    else:
        print(document.decode())
    return 0

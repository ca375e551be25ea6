"""``mercury serve`` and the credentials helpers: ``mercury serving token|assertion`` and
``mercury privacy token|decrypt|rotate``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, cast

from mercury.errors import CommandError

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.privacy.keys import Keys


def register(subparsers: argparse._SubParsersAction[Any]) -> argparse._SubParsersAction[Any]:
    """Adds serve, serving and privacy; returns the privacy actions (more are added there)."""
    serve = subparsers.add_parser("serve", help="run the context API (uvicorn)")
    serve.add_argument("--port", type=int, help="default: serving.port")
    serve.add_argument("--workers", type=int, help="default: serving.workers")
    serve.set_defaults(run=_serve)

    serving = subparsers.add_parser("serving", help="context API credentials (local stand-ins)")
    actions = serving.add_subparsers(dest="serving_action", required=True, metavar="ACTION")
    token = actions.add_parser("token", help="the service token of a configured caller")
    token.add_argument("--caller", default="llm-gateway")
    token.set_defaults(run=_token)
    assertion = actions.add_parser("assertion",
                                   help="an end-user assertion, as the identity provider signs")
    assertion.add_argument("--user", required=True)
    assertion.add_argument("--caller", default="llm-gateway")
    assertion.add_argument("--ttl", type=int, default=120, help="seconds")
    assertion.set_defaults(run=_assertion)

    privacy = subparsers.add_parser("privacy", help="user tokens; reveal a protected value")
    p_actions = privacy.add_subparsers(dest="privacy_action", required=True, metavar="ACTION")
    p_token = p_actions.add_parser("token", help="the user token the audit tables carry")
    p_token.add_argument("user_id")
    p_token.set_defaults(run=_user_token)
    reveal = p_actions.add_parser(
        "decrypt", help="decrypt an audit question (role compliance_investigator only)")
    reveal.add_argument("value", help="enc2:<purpose>:<key id>:<data> (or enc1:<key id>:<data>)")
    reveal.add_argument("--request-id", help="the audit row's request_id: an enc2 value is "
                                             "bound to it (required for enc2)")
    reveal.add_argument("--field", default="question", help="the column it came from")
    reveal.set_defaults(run=_decrypt)
    rotate = p_actions.add_parser(
        "rotate", help="add a version of a key ring key and make it active (security team)")
    rotate.add_argument("--purpose", required=True,
                        help="tokenization | service_tokens | spool | user_kek")
    rotate.set_defaults(run=_rotate)
    return cast("argparse._SubParsersAction[Any]", p_actions)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mercury.config import load_settings

    cfg = load_settings().serving
    uvicorn.run("mercury.serving.runtime:asgi_app", factory=True, host=cfg.host,
                port=args.port or cfg.port, workers=args.workers or cfg.workers,
                loop="uvloop", http="httptools", log_level="warning", access_log=False)
    return 0


def _keys() -> tuple[Settings, Keys]:
    from mercury.config import load_settings
    from mercury.privacy.keys import load_keys

    settings = load_settings()
    return settings, load_keys(settings)


def _token(args: argparse.Namespace) -> int:
    from mercury.serving.auth import service_token

    settings, keys = _keys()
    known = [c.name for c in settings.serving.callers]
    if args.caller not in known:
        raise CommandError(f"no caller {args.caller!r} in serving.callers ({', '.join(known)})")
    print(service_token(keys, args.caller))
    return 0


def _assertion(args: argparse.Namespace) -> int:
    from mercury.config import load_settings
    from mercury.serving.local_idp import issue_assertion

    print(issue_assertion(load_settings(), args.user, args.caller, ttl_s=args.ttl))
    return 0


def _user_token(args: argparse.Namespace) -> int:
    from mercury.privacy.protect import user_token

    _, keys = _keys()
    print(user_token(keys, args.user_id))
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    from mercury.privacy.errors import KeyError_
    from mercury.serving.audit_sealing import open_question
    from mercury.serving.runtime import spool_dir

    settings, keys = _keys()
    try:
        print(open_question(settings, keys, args.value, args.request_id, args.field,
                            spool_folder=spool_dir(settings)))
    except (ValueError, KeyError_) as exc:
        raise CommandError(str(exc)) from exc
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from mercury.config import load_settings
    from mercury.privacy.errors import KeyError_
    from mercury.privacy.keys import rotate

    try:
        version = rotate(load_settings(), args.purpose)
    except KeyError_ as exc:
        raise CommandError(str(exc)) from exc
    print(f"{args.purpose}: version {version} is active; running processes pick it up at "
          "their next start (retired versions still decrypt and verify)")
    return 0

"""``mercury features ...``: compile the definitions, list what is compiled, promote a version.

``register(subparsers)`` adds the ``features`` command to the ``mercury`` parser. Everything
but ``promote`` works offline on the compiled files; ``promote`` sets the active-version
pointer in the online store of the current profile.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> argparse.ArgumentParser:
    features = subparsers.add_parser(
        "features", help="compile feature definitions, list them, promote a version")
    actions = features.add_subparsers(dest="action", required=True, metavar="ACTION")

    compile_ = actions.add_parser(
        "compile", help="write mercury/features/compiled/<set>.v<version>.json")
    compile_.add_argument("--check", action="store_true",
                          help="write nothing; fail naming each stale, missing or extra file")
    compile_.set_defaults(run=_compile)

    list_ = actions.add_parser("list", help="compiled sets, versions, features and windows")
    list_.set_defaults(run=_list)

    promote = actions.add_parser("promote", help="serve VERSION of SET from now on")
    promote.add_argument("set", metavar="SET")
    promote.add_argument("version", metavar="VERSION", type=int)
    promote.set_defaults(run=_promote)
    return features


def _command_error(message: str) -> Exception:
    from mercury.cli import CommandError  # not at import time: mercury.cli imports us

    return CommandError(message)


def _compile(args) -> int:
    from mercury.features import compile as compiler

    try:
        if args.check:
            compiler.check()
            print(f"compiled specs are up to date in {compiler.COMPILED_DIR}")
            return 0
        result = compiler.compile_all()
    except compiler.CompileError as exc:
        print(f"mercury features compile: {exc}", file=sys.stderr)
        return 1
    for name in result.written:
        print(f"wrote     {name}")
    for name in result.removed:
        print(f"removed   {name}")
    print(f"{len(result.written)} written, {len(result.unchanged)} unchanged, "
          f"{len(result.removed)} removed in {compiler.COMPILED_DIR}")
    return 0


def describe(feature_sets) -> list[str]:
    """Human-readable lines: each set and version, then each feature with its windows."""
    from mercury.features.dsl import Aggregate, LastN
    from mercury.features.windows import window

    lines = []
    for fs in feature_sets:
        lines.append(f"{fs.ref:<16} {fs.entity.name} from {fs.source.stream}, ttl {fs.ttl}, "
                     f"owner {fs.owner}")
        for f in fs.features:
            if isinstance(f, Aggregate):
                what = f"{f.op}({f.column or '*'})"
                if f.group_by:
                    what += f" by {f.group_by}"
                if f.column and fs.source.currency_of(f.column):
                    what += " per currency"
                windows = " ".join(window(text).label for text in f.windows)
            elif isinstance(f, LastN):
                what, windows = f"last {f.n} by {f.item_key}", "-"
            else:
                what = "latest" + (f" per {f.per}" if f.per else "")
                windows = f"max age {f.max_age}" if f.max_age else "-"
            where = " and ".join(_condition(c) for c in f.where)
            lines.append(f"  {f.name:<22} {what:<44} {windows:<14} {where}".rstrip())
    return lines


def _condition(c) -> str:
    if c.op in ("not_null", "is_null"):
        return f"{c.column} {c.op}"
    value = ",".join(map(str, c.value)) if isinstance(c.value, tuple) else c.value
    return f"{c.column} {c.op} {value}"


def _list(args) -> int:
    from mercury.features import compile as compiler

    try:
        feature_sets = compiler.load_compiled()
    except compiler.CompileError as exc:
        raise _command_error(str(exc)) from None
    for line in describe(feature_sets):
        print(line)
    return 0


def _promote(args) -> int:
    from mercury.config import load_settings
    from mercury.features import compile as compiler
    from mercury.online.store import open_store

    try:
        compiler.load_compiled([f"{args.set}.v{args.version}"])
    except compiler.CompileError as exc:
        raise _command_error(f"cannot promote: {exc}") from None
    store = open_store(load_settings())
    try:
        before = store.active_versions([args.set])[args.set]
        store.set_active(args.set, args.version)
    except Exception as exc:  # redis.ConnectionError and kin, without importing redis here
        if type(exc).__module__.split(".")[0] != "redis":
            raise
        raise _command_error(f"cannot reach the online store ({exc}); is Redis up? "
                             "`mercury stack up --only redis`") from None
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    was = "nothing" if before is None else f"v{before}"
    print(f"{args.set}: now serving v{args.version} (was {was})")
    return 0

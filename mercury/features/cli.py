"""``mercury features ...``: compile the definitions, list what is compiled, and move versions
through blue/green (``warm-start``, ``shadow``, ``promote``, ``rollback``, ``retire``).

``register(subparsers)`` adds the ``features`` command to the ``mercury`` parser. ``compile``
and ``list`` work offline on the compiled files; the others act on the online store of the
current profile (``warm-start`` also reads the lake, in Spark). See
``mercury.features.lifecycle.bluegreen`` and ``mercury.features.lifecycle.warm_start``.
"""

from __future__ import annotations

import argparse
import sys

from mercury.errors import CommandError


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

    explain = actions.add_parser(
        "explain", help="print what an engine runs for compiled sets (Flink SQL)")
    explain.add_argument("sets", nargs="*", metavar="SET.vN",
                         help="e.g. spending.v1 (default: every compiled set)")
    explain.add_argument("--engine", choices=("flink",), default="flink")
    explain.set_defaults(run=_explain)

    warm = actions.add_parser(
        "warm-start", help="fill a version's online hashes and seam state from the lake")
    warm.add_argument("ref", metavar="SET.vN")
    warm.add_argument("--cut-ms", type=int, required=True,
                      help="arrival cut T (epoch ms): the lake's events that arrived by then")
    warm.set_defaults(run=_warm_start)

    shadow = actions.add_parser(
        "shadow", help="compare two versions' online values; exit 1 if an unchanged one differs")
    shadow.add_argument("old", metavar="SET.vN")
    shadow.add_argument("new", metavar="SET.vM")
    shadow.add_argument("--as-of-ms", type=int, default=None)
    shadow.add_argument("--entities", default=None, help="comma-separated entity ids")
    shadow.add_argument("--report", default=None, help="write the report as JSON here")
    shadow.set_defaults(run=_shadow)

    promote = actions.add_parser("promote", help="serve VERSION of SET from now on")
    promote.add_argument("set", metavar="SET")
    promote.add_argument("version", metavar="VERSION", type=int)
    promote.set_defaults(run=_promote)

    rollback = actions.add_parser("rollback", help="serve the version the last promotion replaced")
    rollback.add_argument("set", metavar="SET")
    rollback.set_defaults(run=_rollback)

    retire = actions.add_parser("retire", help="expire every key of a version no longer served")
    retire.add_argument("set", metavar="SET")
    retire.add_argument("version", metavar="VERSION", type=int)
    retire.add_argument("--after-s", type=int, default=None,
                        help="seconds until the keys expire (default offline.retire_after_s)")
    retire.set_defaults(run=_retire)
    return features


def _compile(args) -> int:
    from mercury.features.definition import compile as compiler

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
    from mercury.features.definition.dsl import Aggregate, LastN
    from mercury.features.definition.windows import window

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
    from mercury.features.definition import compile as compiler

    try:
        feature_sets = compiler.load_compiled()
    except compiler.CompileError as exc:
        raise CommandError(str(exc)) from None
    for line in describe(feature_sets):
        print(line)
    return 0


def _explain(args) -> int:
    from mercury.features.definition import compile as compiler
    from mercury.features.executors.flinksql.plan import compile_job

    try:
        feature_sets = compiler.load_compiled(args.sets or None)
    except compiler.CompileError as exc:
        raise CommandError(str(exc)) from None
    print(compile_job(feature_sets).explain(), end="")
    return 0


def _online(what: str, action):
    """``action(settings, store)`` on the configured online store, closed afterwards; a
    store that cannot be reached or a refused step is a CommandError."""
    from mercury.config import load_settings
    from mercury.features.lifecycle.bluegreen import BlueGreenError
    from mercury.features.lifecycle.warm_start import LakeBehind
    from mercury.online.factory import open_store

    settings = load_settings()
    try:
        with open_store(settings) as store:
            return action(settings, store)
    except (BlueGreenError, LakeBehind) as exc:
        raise CommandError(f"cannot {what}: {exc}") from None
    except Exception as exc:  # redis.ConnectionError and kin, without importing redis here
        if type(exc).__module__.split(".")[0] != "redis":
            raise
        raise CommandError(f"cannot reach the online store ({exc}); is Redis up? "
                             "`mercury stack up --only redis`") from None


def _one_set(ref: str):
    from mercury.features.definition import compile as compiler

    try:
        return compiler.load_compiled([ref])[0] if ".v" in ref else None
    except compiler.CompileError as exc:
        raise CommandError(str(exc)) from None


def _set_ref(ref: str):
    feature_set = _one_set(ref)
    if feature_set is None:
        raise CommandError(f"{ref!r}: name one version, e.g. spending.v2")
    return feature_set


def _promote(args) -> int:
    from mercury.features.lifecycle import bluegreen

    switch = _online("promote", lambda _, store: bluegreen.promote(store, args.set,
                                                                   args.version))
    print(switch.summary())
    return 0


def _rollback(args) -> int:
    from mercury.features.lifecycle import bluegreen

    switch = _online("roll back", lambda _, store: bluegreen.rollback(store, args.set))
    print(switch.summary())
    return 0


def _retire(args) -> int:
    from mercury.features.lifecycle import bluegreen

    retired = _online("retire", lambda settings, store: bluegreen.retire(
        store, args.set, args.version,
        settings.offline.retire_after_s if args.after_s is None else args.after_s))
    print(retired.summary())
    return 0


def _shadow(args) -> int:
    from pathlib import Path

    from mercury.features.lifecycle import bluegreen

    old, new = _set_ref(args.old), _set_ref(args.new)
    entities = args.entities.split(",") if args.entities else None
    report = _online("compare", lambda settings, store: bluegreen.shadow_compare(
        store, old, new, entity_ids=entities, as_of_ms=args.as_of_ms,
        sample=settings.offline.consistency_sample_entities))
    print(report.summary())
    if args.report:
        Path(args.report).write_bytes(report.to_json())
    return 0 if report.ok else 1


def _warm_start(args) -> int:
    from mercury.features.executors.spark.session import session
    from mercury.features.lifecycle import warm_start

    feature_set = _set_ref(args.ref)

    def run(settings, store):
        spark = session(settings.spark)
        try:
            return warm_start.backfill_online(spark, settings, feature_set, args.cut_ms, store)
        finally:
            spark.stop()

    _online("warm-start", run)
    return 0

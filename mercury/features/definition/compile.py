"""Compiling feature definitions to versioned JSON, and loading what was compiled.

Engines (the PyFlink job, the Spark job, the online reader) run compiled specs, never the
Python that defined them: ``compile_all`` writes one file per feature set and version,

    mercury/features/compiled/<name>.v<version>.json

(``dsl.to_dict``, sorted keys, 2-space indent, trailing newline), and ``load_compiled`` reads
them back into frozen ``FeatureSet``s, validating each against today's contracts on the way.

``check`` is what CI runs: it fails, naming each file, when a compiled file is stale (the
definition changed but the file was not recompiled, or changed without a version bump),
missing (a definition with no file), extra (a file with no definition), or no longer valid
(it names a stream, column or function that does not exist any more: a dangling reference).

A set keeps its old versions in ``definitions.ALL`` while a new version fills and the old
one serves; dropping a version from ``ALL`` retires its file on the next compile.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mercury.features.definition import dsl

COMPILED_DIR = Path(__file__).resolve().parents[1] / "compiled"
_FILE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.json$")


class CompileError(Exception):
    """Compiled specs and definitions disagree, or a spec cannot load; the message says which."""


def file_name(feature_set: dsl.FeatureSet) -> str:
    return f"{feature_set.name}.v{feature_set.version}.json"


def render(feature_set: dsl.FeatureSet) -> str:
    """The exact text of a compiled spec."""
    return json.dumps(dsl.to_dict(feature_set), sort_keys=True, indent=2,
                      ensure_ascii=False) + "\n"


def _definitions(feature_sets: Iterable[dsl.FeatureSet] | None) -> dict[str, str]:
    """file name -> expected text, refusing two definitions of one (name, version)."""
    if feature_sets is None:
        from mercury.features.definitions import ALL

        feature_sets = ALL
    expected: dict[str, str] = {}
    for fs in feature_sets:
        name = file_name(fs)
        text = render(fs)
        if name in expected and expected[name] != text:
            raise CompileError(f"{fs.ref} is defined twice, differently: one version, one spec")
        expected[name] = text
    return expected


def _compiled_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        return {}
    return {p.name: p for p in directory.iterdir()
            if p.suffix == ".json" and not p.name.startswith(".")}


@dataclass
class CompileResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def compile_all(directory: Path = COMPILED_DIR,
                feature_sets: Iterable[dsl.FeatureSet] | None = None) -> CompileResult:
    """Write every definition's spec; rewrite only what changed; remove retired files."""
    expected = _definitions(feature_sets)
    directory.mkdir(parents=True, exist_ok=True)
    existing = _compiled_files(directory)
    result = CompileResult()
    for name, text in sorted(expected.items()):
        path = directory / name
        if name in existing and existing[name].read_text() == text:
            result.unchanged.append(name)
            continue
        temporary = directory / f".{name}.tmp"
        temporary.write_text(text)
        temporary.replace(path)  # atomic: a reader never sees half a spec
        result.written.append(name)
    for name in sorted(set(existing) - set(expected)):
        existing[name].unlink()
        result.removed.append(name)
    return result


def problems(directory: Path = COMPILED_DIR,
             feature_sets: Iterable[dsl.FeatureSet] | None = None) -> list[str]:
    """Each way the compiled files disagree with the definitions, one line per file."""
    expected = _definitions(feature_sets)
    existing = _compiled_files(directory)
    found = []
    for name in sorted(set(expected) | set(existing)):
        where = directory / name
        if name not in existing:
            found.append(f"missing: {where} (a definition has no compiled spec)")
        elif name not in expected:
            found.append(f"extra: {where} (no definition has this name and version)")
        elif existing[name].read_text() != expected[name]:
            found.append(f"stale: {where} differs from its definition (recompile; bump the "
                         f"version if values change)")
        else:
            try:
                _load(existing[name])
            except CompileError as exc:
                found.append(f"invalid: {exc}")
    return found


def check(directory: Path = COMPILED_DIR,
          feature_sets: Iterable[dsl.FeatureSet] | None = None) -> None:
    """Raise ``CompileError`` naming every stale, missing, extra or invalid compiled file."""
    found = problems(directory, feature_sets)
    if found:
        raise CompileError(
            f"{len(found)} compiled spec(s) out of date; run `mercury features compile`:\n  "
            + "\n  ".join(found))


def _load(path: Path) -> dsl.FeatureSet:
    match = _FILE.match(path.name)
    if not match:
        raise CompileError(f"{path}: not a compiled spec name (<set>.v<version>.json)")
    try:
        data = json.loads(path.read_text())
        feature_set = dsl.feature_set_from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:  # DefinitionError is a ValueError
        raise CompileError(f"{path}: {exc}") from None
    if (feature_set.name, str(feature_set.version)) != (match["name"], match["version"]):
        raise CompileError(f"{path}: holds {feature_set.ref}, not what its name says")
    return feature_set


def load_one(ref: str, directory: Path = COMPILED_DIR) -> dsl.FeatureSet:
    """One compiled version, named ``<set>.v<version>`` (an unknown one: CompileError)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*\.v[1-9][0-9]*", ref):
        raise CompileError(f"{ref!r}: name one version of a set, e.g. spending.v1")
    (feature_set,) = load_compiled([ref], directory)
    return feature_set


def digest(feature_set: dsl.FeatureSet) -> str:
    """The compiled spec's SHA-256: what a run pins, and proves it ran."""
    import hashlib

    return hashlib.sha256(render(feature_set).encode()).hexdigest()


def load_compiled(names: Sequence[str] | None = None,
                  directory: Path = COMPILED_DIR) -> list[dsl.FeatureSet]:
    """The compiled feature sets, sorted by (name, version): every version of each set.

    ``names`` picks sets by name (``"spending"``: all its versions) or by reference
    (``"spending.v1"``); a name with no compiled file is an error, never silently empty.
    """
    loaded = [_load(path) for _, path in sorted(_compiled_files(directory).items())]
    if names is not None:
        wanted = set(names)
        unknown = {n for n in wanted
                   if not any(n in (fs.name, fs.ref) for fs in loaded)}
        if unknown:
            known = ", ".join(fs.ref for fs in loaded) or "none"
            raise CompileError(f"no compiled spec for {', '.join(sorted(unknown))} in "
                               f"{directory}; compiled: {known}")
        loaded = [fs for fs in loaded if fs.name in wanted or fs.ref in wanted]
    return sorted(loaded, key=lambda fs: (fs.name, fs.version))

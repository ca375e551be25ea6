"""Schema evolution rules: a new version must stay readable against every earlier version.

The check follows Avro's reader/writer resolution with the new schema as reader and each
earlier version as writer (backward, transitive), plus one house rule that Avro itself does
not impose: a field is never removed, because consumers of the old version may rely on it.

Allowed: adding a field with a default; adding enum symbols; widening int->long->float->double;
string<->bytes; adding branches to a union. Anything else fails with a message naming the
field path.
"""

from __future__ import annotations

from mercury.contracts import schemas
from mercury.contracts.avro_walk import Node, Schema, named_types, resolve, type_name

PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def problems(writer: Schema, reader: Schema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty when it can)."""
    checker = _Resolver(named_types(writer), named_types(reader))
    return checker.check(writer, reader, "")


def check_subject(subject: str) -> list[str]:
    """Problems of every version of ``subject`` against each of its earlier versions."""
    found: list[str] = []
    known = schemas.versions(subject)
    for new in known[1:]:
        reader = schemas.load(subject, new).schema
        for old in range(1, new):
            writer = schemas.load(subject, old).schema
            found += [f"{subject} v{new} vs v{old}: {p}" for p in problems(writer, reader)]
    return found


def check_all() -> list[str]:
    return [p for subject in schemas.subjects() for p in check_subject(subject)]


class _Resolver:
    def __init__(self, writer_names: dict[str, Schema], reader_names: dict[str, Schema]) -> None:
        self.w_names = writer_names
        self.r_names = reader_names

    def check(self, writer: Node, reader: Node, path: str) -> list[str]:
        writer = resolve(writer, self.w_names)
        reader = resolve(reader, self.r_names)
        w_kind, r_kind = type_name(writer), type_name(reader)
        where = path or "<root>"
        if w_kind == "union":
            return [p for branch in writer for p in self._one_of(branch, reader, path)]
        if r_kind == "union":
            return self._one_of(writer, reader, path)
        if w_kind != r_kind:
            if r_kind in PROMOTIONS.get(w_kind, ()) and not _logical(writer) and \
                    not _logical(reader):
                return []
            return [f"field {where!r} changed type from {_show(writer)} to {_show(reader)}"]
        if _logical(writer) != _logical(reader):
            return [f"field {where!r} changed type from {_show(writer)} to {_show(reader)}"]
        if w_kind == "record":
            return self._record(writer, reader, path)
        if w_kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                return [f"field {where!r} enum {reader['name']} dropped symbol(s) "
                        f"{', '.join(missing)} with no enum default"]
            return []
        if w_kind == "array":
            return self.check(writer["items"], reader["items"], f"{path}[]")
        if w_kind == "map":
            return self.check(writer["values"], reader["values"], f"{path}{{}}")
        if w_kind == "fixed" and writer.get("size") != reader.get("size"):
            return [f"field {where!r} fixed size changed"]
        return []

    def _one_of(self, writer: Node, reader_union: Node, path: str) -> list[str]:
        branches = reader_union if isinstance(reader_union, list) else [reader_union]
        failures: list[list[str]] = []
        for branch in branches:
            found = self.check(writer, branch, path)
            if not found:
                return []
            failures.append(found)
        w = resolve(writer, self.w_names)
        return [f"field {path or '<root>'!r}: {_show(w)} values can no longer be read "
                f"(new type {_show([resolve(b, self.r_names) for b in branches])})"]

    def _record(self, writer: Schema, reader: Schema, path: str) -> list[str]:
        found: list[str] = []
        w_fields = {f["name"]: f for f in writer["fields"]}
        r_fields = {f["name"]: f for f in reader["fields"]}
        prefix = f"{path}." if path else ""
        for name, r_field in r_fields.items():
            aliases = [name, *r_field.get("aliases", [])]
            w_field = next((w_fields[a] for a in aliases if a in w_fields), None)
            if w_field is None:
                if "default" not in r_field:
                    found.append(f"field {prefix + name!r} was added without a default")
                continue
            found += self.check(w_field["type"], r_field["type"], prefix + name)
        renamed = {a for f in reader["fields"] for a in f.get("aliases", [])}
        for name in w_fields:
            if name not in r_fields and name not in renamed:
                found.append(f"field {prefix + name!r} was removed")
        return found


def _logical(node: Node) -> str | None:
    return node.get("logicalType") if isinstance(node, dict) else None


def _show(node: Node) -> str:
    if isinstance(node, list):
        return "[" + ", ".join(_show(b) for b in node) + "]"
    if isinstance(node, str):
        return node
    if node.get("type") in ("record", "enum", "fixed"):
        return f"{node['type']} {node['name']}"
    if _logical(node):
        return f"{node['type']}({node['logicalType']})"
    return str(node.get("type"))

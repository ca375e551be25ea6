"""Walking Avro schemas: named-type resolution and field iteration, shared by the checkers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeAlias

# A parsed ``.avsc`` (a JSON object) and any node in it: a type name, a union (a list) or a
# complex type (an object). JSON, so the nodes stay ``Any``.
Schema: TypeAlias = dict[str, Any]
Node: TypeAlias = Any

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
NAMED = {"record", "enum", "fixed"}


def full_name(node: Schema, namespace: str | None) -> str:
    name: str = node["name"]
    if "." in name:
        return name
    space = node.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def named_types(schema: Node, namespace: str | None = None,
                found: dict[str, Schema] | None = None) -> dict[str, Schema]:
    """Every named type (record, enum, fixed) in a schema, by full and short name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, namespace, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in NAMED:
            name = full_name(schema, namespace)
            found[name] = schema
            found.setdefault(schema["name"], schema)
            namespace = name.rpartition(".")[0] or None
            for field in schema.get("fields", []):
                named_types(field["type"], namespace, found)
        elif kind == "array":
            named_types(schema["items"], namespace, found)
        elif kind == "map":
            named_types(schema["values"], namespace, found)
        elif isinstance(kind, (dict, list)):
            named_types(kind, namespace, found)
    return found


def resolve(node: Node, names: dict[str, Schema]) -> Node:
    """Replace a reference to a named type by its definition; unwrap ``{"type": "long"}``."""
    if isinstance(node, str) and node not in PRIMITIVES:
        return names[node]
    if isinstance(node, dict) and node.get("type") in PRIMITIVES and "logicalType" not in node:
        return node["type"]
    return node


def type_name(node: Node) -> str:
    """The Avro kind of a resolved node: a primitive name, record, enum, array, map, union."""
    if isinstance(node, list):
        return "union"
    if isinstance(node, str):
        return node
    kind = node["type"]
    return kind if isinstance(kind, str) else type_name(kind)


def iter_fields(schema: Schema, prefix: str = "") -> Iterator[tuple[str, Schema]]:
    """Every field of a record schema, nested records included, as (dotted path, field)."""
    names = named_types(schema)
    seen: set[str] = set()

    def walk(record: Schema, prefix: str) -> Iterator[tuple[str, Schema]]:
        for field in record["fields"]:
            path = f"{prefix}{field['name']}"
            yield path, field
            for sub in _records_in(field["type"], names):
                key = f"{path}:{sub['name']}"
                if key not in seen:
                    seen.add(key)
                    yield from walk(sub, f"{path}.")

    yield from walk(schema, prefix)


def _records_in(node: Node, names: dict[str, Schema]) -> list[Schema]:
    node = resolve(node, names)
    if isinstance(node, list):
        return [r for branch in node for r in _records_in(branch, names)]
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "record":
            return [node]
        if kind == "array":
            return _records_in(node["items"], names)
        if kind == "map":
            return _records_in(node["values"], names)
    return []

"""Every column a feature set names must exist in its source's contract (or be derived)."""

from __future__ import annotations

from typing import Any, Protocol

from mercury.contracts import registry, schemas
from mercury.contracts.avro_walk import iter_fields
from mercury.features.definition.errors import DefinitionError

# What this module reads of the DSL's specs. Protocols, since the DSL imports this module.


class _Derived(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def inputs(self) -> tuple[str, ...]: ...


class _Source(Protocol):
    @property
    def stream(self) -> str: ...

    @property
    def envelope(self) -> str | None: ...

    @property
    def money(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def derived(self) -> tuple[_Derived, ...]: ...

    def currency_of(self, column: str) -> str | None: ...


class _Entity(Protocol):
    @property
    def join_key(self) -> str: ...


class _FeatureSet(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def entity(self) -> _Entity: ...

    @property
    def source(self) -> _Source: ...

    # Aggregate | LastN | Latest, told apart by ``kind`` (their attributes differ).
    @property
    def features(self) -> tuple[Any, ...]: ...


def source_columns(source: _Source) -> set[str]:
    schema = schemas.load(registry.stream(source.stream).schema_subject).schema
    paths = [path for path, _ in iter_fields(schema)]
    if source.envelope == "debezium":
        columns = {p.split(".", 1)[1] for p in paths if p.startswith("after.")}
    else:
        columns = {p for p in paths if "." not in p}
    return columns | {d.name for d in source.derived}


def _numeric(source: _Source, column: str) -> bool:
    schema = schemas.load(registry.stream(source.stream).schema_subject).schema
    prefix = "after." if source.envelope == "debezium" else ""
    for path, field in iter_fields(schema):
        if path == prefix + column:
            kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
            return any(k in ("int", "long", "float", "double") or
                       (isinstance(k, dict) and k.get("type") in ("int", "long")) for k in kinds)
    return False  # derived columns are strings here


def used_columns(feature_set: _FeatureSet) -> list[str]:
    """Every row column the set's features read, in a stable order (what an executor must
    carry of each event)."""
    names: list[str | None] = []
    for feature in feature_set.features:
        names += [f.column for f in feature.where]
        if feature.kind == "aggregate":
            names += [feature.column, feature.group_by]
            if feature.column:
                names.append(feature_set.source.currency_of(feature.column))
        elif feature.kind == "last_n":
            names += [feature.item_key, feature.status, *feature.fields]
        elif feature.kind == "latest":
            names += [feature.per, feature.expires, *feature.fields]
    return list(dict.fromkeys(n for n in names if n is not None))


def check_columns(feature_set: _FeatureSet) -> None:
    """Raise ``DefinitionError`` for a column the set names that its source does not have
    (features are told apart by ``kind``: this module must not import the DSL)."""
    known = source_columns(feature_set.source)

    def need(what: str, column: str | None) -> None:
        if column is not None and column not in known:
            raise DefinitionError(
                f"{feature_set.name}: {what} {column!r} is not a column of "
                f"{feature_set.source.stream}; known: {', '.join(sorted(known))}")

    need("entity key", feature_set.entity.join_key)
    for amount, currency in feature_set.source.money:
        need("money amount", amount)
        need("money currency", currency)
    for derived in feature_set.source.derived:
        for column in derived.inputs:
            need(f"input of {derived.name}", column)
    for feature in feature_set.features:
        for condition in feature.where:
            need(f"{feature.name} filter", condition.column)
        if feature.kind == "aggregate":
            need(f"{feature.name} column", feature.column)
            need(f"{feature.name} group_by", feature.group_by)
            if feature.op in ("sum", "avg", "min", "max") and \
                    not _numeric(feature_set.source, feature.column):
                raise DefinitionError(f"{feature.name}: {feature.op} of {feature.column!r} needs "
                                      "a numeric column")
            if feature.op == "distinct_count" and feature_set.source.currency_of(feature.column):
                raise DefinitionError(f"{feature.name}: a distinct count of money means nothing")
        elif feature.kind == "last_n":
            for column in (feature.item_key, feature.status, *feature.fields):
                need(f"{feature.name} field", column)
        elif feature.kind == "latest":
            for column in (feature.per, feature.expires, *feature.fields):
                need(f"{feature.name} field", column)

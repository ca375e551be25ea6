"""Evaluating a feature's ``where`` conditions on an event row (all must hold)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from mercury.features.definition.dsl import Filter


def holds(condition: Filter, row: Mapping[str, Any]) -> bool:
    value: object = row.get(condition.column)
    op = condition.op
    if op == "eq":
        return value == condition.value
    if op == "ne":
        return value != condition.value
    if op == "in":  # the DSL keeps the values of in / not_in as a tuple
        return value in cast("tuple[object, ...]", condition.value)
    if op == "not_in":
        return value not in cast("tuple[object, ...]", condition.value)
    if op == "not_null":
        return value is not None
    if op == "is_null":
        return value is None
    raise ValueError(f"unknown filter op {op!r}")


def passes(where: Iterable[Filter], row: Mapping[str, Any]) -> bool:
    return all(holds(condition, row) for condition in where)

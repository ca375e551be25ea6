"""Evaluating a feature's ``where`` conditions on an event row (all must hold)."""

from __future__ import annotations


def holds(condition, row: dict) -> bool:
    value = row.get(condition.column)
    op = condition.op
    if op == "eq":
        return value == condition.value
    if op == "ne":
        return value != condition.value
    if op == "in":
        return value in condition.value
    if op == "not_in":
        return value not in condition.value
    if op == "not_null":
        return value is not None
    if op == "is_null":
        return value is None
    raise ValueError(f"unknown filter op {op!r}")


def passes(where, row: dict) -> bool:
    return all(holds(condition, row) for condition in where)

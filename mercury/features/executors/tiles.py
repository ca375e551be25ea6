"""Partial aggregates kept per tile, and how tiles merge into a window's value.

A tile holds, per aggregate feature, one partial per *bucket*: the bucket is the group value
and/or the currency of the amount, joined by ``SEP`` (``"groceries<SEP>EUR"``, ``"EUR"``,
``"groceries"`` or ``""``), so money is never added across currencies. Partials are JSON-friendly:

    count -> int    sum -> float    min/max -> number    avg -> [sum, count]
    distinct_count -> sorted list of the distinct values

Merging is associative and commutative, so the order events arrive in never matters, and a
window's value is the merge of its tiles' partials. ``finalize`` turns merged buckets into the
value format of ``mercury.features.executors.reference`` (the oracle).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mercury.features.definition.filters import passes

if TYPE_CHECKING:
    from mercury.features.definition.dsl import Aggregate, Source

# A partial and a leaf are JSON values (see the module doc), so they are ``Any`` here.

_NO_GROUP = "unknown"
SEP = "\x1f"  # ASCII unit separator: never part of a group value or a currency code


def bucket_of(feature: Aggregate, source: Source, row: Mapping[str, Any]) -> str | None:
    """The bucket an event falls in for ``feature``; None if the event does not count."""
    if not passes(feature.where, row):
        return None
    value = None if feature.column is None else row.get(feature.column)
    if feature.column is not None and value is None:
        return None  # aggregates skip null values (count of a column counts non-null ones)
    parts = []
    if feature.group_by is not None:
        group = row.get(feature.group_by)
        parts.append(_NO_GROUP if group is None else str(group))
    currency_column = source.currency_of(feature.column) if feature.column else None
    if currency_column is not None:
        parts.append(str(row.get(currency_column)))
    return SEP.join(parts)


def add(op: str, partial: Any, value: Any) -> Any:
    """``partial`` (None when empty) after one more value."""
    if op == "count":
        return (partial or 0) + 1
    if op == "sum":
        return (partial or 0.0) + value
    if op == "min":
        return value if partial is None else min(partial, value)
    if op == "max":
        return value if partial is None else max(partial, value)
    if op == "avg":
        total, count = partial or (0.0, 0)
        return [total + value, count + 1]
    if op == "distinct_count":
        values = set(partial or ())
        values.add(value)
        return sorted(values)
    raise ValueError(f"unknown aggregation {op!r}")


def merge(op: str, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if op in ("count", "sum"):
        return a + b
    if op == "min":
        return min(a, b)
    if op == "max":
        return max(a, b)
    if op == "avg":
        return [a[0] + b[0], a[1] + b[1]]
    if op == "distinct_count":
        return sorted(set(a) | set(b))
    raise ValueError(f"unknown aggregation {op!r}")


def leaf(op: str, partial: Any) -> Any:
    """The value a merged partial stands for."""
    if op == "count":
        return partial or 0
    if op == "sum":
        return float(partial or 0.0)
    if op in ("min", "max"):
        return partial
    if op == "avg":
        return None if not partial or not partial[1] else partial[0] / partial[1]
    if op == "distinct_count":
        return len(partial or ())
    raise ValueError(f"unknown aggregation {op!r}")


def finalize(feature: Aggregate, source: Source, buckets: Mapping[str, Any]) -> Any:
    """Merged ``{bucket: partial}`` -> the feature's value for one window."""
    keyed = feature.group_by is not None or (
        feature.column is not None and source.currency_of(feature.column) is not None)
    if not keyed:
        return leaf(feature.op, buckets.get(""))
    out: dict[str, Any] = {}
    for bucket, partial in buckets.items():
        *path, last = bucket.split(SEP)
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = leaf(feature.op, partial)
    return out

"""Named functions for derived columns, and the flattening of change-event envelopes.

Specs refer to these by name (``Derived("category", "mcc_category", ("mcc_code",))``), so a
compiled spec stays plain JSON and every engine applies the same Python function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol


class _Derived(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def function(self) -> str: ...

    @property
    def inputs(self) -> tuple[str, ...]: ...


class _Source(Protocol):
    """What ``apply_derived`` needs of a ``dsl.Source`` (the DSL imports this module)."""

    @property
    def derived(self) -> tuple[_Derived, ...]: ...

# Merchant category codes (ISO 18245) grouped the way people talk about their spending.
MCC_CATEGORIES = {
    "5411": "groceries", "5812": "eating_out", "5814": "eating_out", "4121": "transport",
    "5541": "transport", "4511": "travel", "7011": "travel", "5999": "shopping",
    "5732": "shopping", "5311": "shopping", "5691": "shopping", "5912": "health",
    "4899": "bills", "4814": "bills", "7832": "entertainment", "6011": "cash",
}


def mcc_category(mcc_code: str) -> str:
    return MCC_CATEGORIES.get(mcc_code, "other")


def purchase_status(event_type: str | None, auth_decision: str | None,
                    reversal_reason: str | None) -> str | None:
    """Where a purchase stands after this event of its lifecycle."""
    if event_type == "AUTH":
        return "DECLINED" if auth_decision == "DECLINED" else "PENDING"
    if event_type == "SETTLEMENT":
        return "SETTLED"
    if event_type == "REVERSAL":
        return "CHARGED_BACK" if reversal_reason == "CHARGEBACK" else "REVERSED"
    return None


FUNCTIONS: dict[str, Callable[..., Any]] = {"mcc_category": mcc_category,
                                            "purchase_status": purchase_status}


def apply_derived(source: _Source, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the source's derived columns added (a new dict)."""
    if not source.derived:
        return row
    row = dict(row)
    for column in source.derived:
        row[column.name] = FUNCTIONS[column.function](*(row.get(i) for i in column.inputs))
    return row


def unwrap_debezium(record: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """(row, deleted) of a Debezium change event: ``after``; for a delete its ``key`` (a v2
    delete carries nothing else), or ``before`` (v1)."""
    if record.get("op") == "d":
        return dict(record.get("key") or record.get("before") or {}), True
    return dict(record.get("after") or {}), False

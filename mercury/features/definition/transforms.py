"""Named functions for derived columns, and the flattening of change-event envelopes.

Specs refer to these by name (``Derived("category", "mcc_category", ("mcc_code",))``), so a
compiled spec stays plain JSON and every engine applies the same Python function.
"""

from __future__ import annotations

# Merchant category codes (ISO 18245) grouped the way people talk about their spending.
MCC_CATEGORIES = {
    "5411": "groceries", "5812": "eating_out", "5814": "eating_out", "4121": "transport",
    "5541": "transport", "4511": "travel", "7011": "travel", "5999": "shopping",
    "5732": "shopping", "5311": "shopping", "5691": "shopping", "5912": "health",
    "4899": "bills", "4814": "bills", "7832": "entertainment", "6011": "cash",
}


def mcc_category(mcc_code):
    return MCC_CATEGORIES.get(mcc_code, "other")


def purchase_status(event_type, auth_decision, reversal_reason):
    """Where a purchase stands after this event of its lifecycle."""
    if event_type == "AUTH":
        return "DECLINED" if auth_decision == "DECLINED" else "PENDING"
    if event_type == "SETTLEMENT":
        return "SETTLED"
    if event_type == "REVERSAL":
        return "CHARGED_BACK" if reversal_reason == "CHARGEBACK" else "REVERSED"
    return None


FUNCTIONS = {"mcc_category": mcc_category, "purchase_status": purchase_status}


def apply_derived(source, row: dict) -> dict:
    """``row`` with the source's derived columns added (a new dict)."""
    if not source.derived:
        return row
    row = dict(row)
    for column in source.derived:
        row[column.name] = FUNCTIONS[column.function](*(row.get(i) for i in column.inputs))
    return row


def unwrap_debezium(record: dict) -> tuple[dict, bool]:
    """(row, deleted) of a Debezium change event: ``after``, or ``before`` for a delete."""
    if record.get("op") == "d":
        return dict(record.get("before") or {}), True
    return dict(record.get("after") or {}), False

"""What happens to records on their way to the stream: corruption and schema drift.

Each malformed kind maps to the validation rule that must catch it, so a test can match dead
letters against the manifest kind by kind.
"""

from __future__ import annotations

import random

import orjson

MALFORMED_KINDS = ("wrong_type", "missing_required_field", "unknown_enum", "bad_currency",
                   "not_json")

# stream -> kind -> how to break a record of it (field, replacement); None deletes the field.
_BREAKERS = {
    "transactions": {
        "wrong_type": ("amount", lambda r: f"{r['amount']:.2f}"),
        "missing_required_field": ("merchant_id", None),
        "unknown_enum": ("event_type", lambda r: "REFUND"),
        "bad_currency": ("currency", lambda r: {"EUR": "EURO", "USD": "US$"}.get(
            r["currency"], r["currency"].lower() + "X")),
    },
    "user_activity": {
        "wrong_type": ("event_ts", lambda r: f"{r['event_ts']}ms"),
        "missing_required_field": ("session_id", None),
        "unknown_enum": ("platform", lambda r: "SMART_TV"),
    },
    "risk_signals": {
        "wrong_type": ("score", lambda r: "high"),
        "missing_required_field": ("signal_type", None),
        "unknown_enum": ("severity", lambda r: "SEVERE"),
    },
}

# A card number that passes the Luhn check (the networks' well-known test number).
TEST_PAN = "4111111111111111"


def _evolved_transaction(rng: random.Random) -> dict:
    extra = {"installment_plan_id": f"plan_{rng.getrandbits(40):010x}",
             "wallet_type": rng.choice(("APPLE_PAY", "GOOGLE_PAY", "NONE"))}
    if extra["wallet_type"] == "NONE":  # a careless producer sends the keyed-in card number:
        extra["pan"] = TEST_PAN         # the contract drops it before any sink
    return extra


# Fields producers started sending before every consumer knew them.
_EVOLVED_FIELDS = {
    "transactions": _evolved_transaction,
    "user_activity": lambda rng: {"experiment_bucket": rng.choice(("A", "B", "control"))},
    "risk_signals": lambda rng: {"model_version": rng.choice(("fraud-v7.2", "fraud-v8.0"))},
}

CAN_BREAK = frozenset(_BREAKERS)


def kinds_for(stream: str) -> tuple[str, ...]:
    return (*_BREAKERS[stream], "not_json")


def break_record(rng: random.Random, stream: str, record: dict, kind: str) -> bytes:
    """The payload of ``record`` damaged as ``kind``; never contains a newline."""
    if kind == "not_json":
        text = orjson.dumps(record)
        return text[: rng.randrange(1, max(2, len(text) - 1))]
    field, replace = _BREAKERS[stream][kind]
    damaged = dict(record)
    if replace is None:
        del damaged[field]
    else:
        damaged[field] = replace(record)
    return orjson.dumps(damaged)


def evolve(rng: random.Random, stream: str, record: dict) -> list[str]:
    """Add the stream's not-yet-known fields to ``record``; returns their names."""
    extra = _EVOLVED_FIELDS[stream](rng)
    record.update(extra)
    return list(extra)

"""Validating raw JSON records against a contract.

A verdict names the rule a bad record broke and the field, so a dead letter says exactly what
to fix. Fields the schema does not know yet (producers add optional fields without a
coordinated deploy) are allowed and reported in ``unknown_fields``, unless the classifier
(``sensitive``) finds card or personal data in one: then it is dropped from the record and
reported in ``dropped_fields`` as (path, rule). Fields classed ``card_data`` leave masked
(``CARD_DATA_MASK``). So every sink behind a validator (event log, staged files, late events,
lake) gets the cleaned record (docs/COMPLIANCE.md, "Data classes at the sinks"). Messages name
the field and the rule, never the value: they are classed public in a dead letter. Missing
optional fields get their schema default.

Rules, in the order they are checked: not_json, not_an_object (or, for Confluent Avro
payloads, unknown_schema_id and bad_avro: ``payloads``), missing_required_field,
wrong_type, unknown_enum, the format rules (bad_currency, bad_country, bad_mcc_code,
bad_uuid, bad_language), then event_after_arrival: a record whose ``event_ts`` lies more than
``EVENT_AHEAD_OF_ARRIVAL_MS`` (1 hour) after its ``ingest_ts`` (a producer's clock gone
wrong) is refused. Every executor validates with this module, so all three refuse the same
records, and no single record can drag a stream's event-time watermark ahead of its arrivals
by more than that bound (docs/STREAMING.md, "Hostile time").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from mercury.contracts import payloads, schemas
from mercury.contracts.avro_walk import PRIMITIVES, Node, Schema, named_types, resolve
from mercury.contracts.code_lists import COUNTRIES, CURRENCIES, LANGUAGES
from mercury.contracts.data_classes import DataClass
from mercury.contracts.sensitive import classify, text_rule
from mercury.contracts.wire import WriterSchemas

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MCC = re.compile(r"^[0-9]{4}$")

FORMAT_RULES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "iso4217": ("bad_currency", lambda v: v in CURRENCIES),
    "iso3166_alpha2": ("bad_country", lambda v: v in COUNTRIES),
    "iso639_1": ("bad_language", lambda v: v in LANGUAGES),
    "mcc": ("bad_mcc_code", lambda v: _MCC.match(v) is not None),
    "uuid": ("bad_uuid", lambda v: _UUID.match(v) is not None),
}

INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
# How far a record's event time may lie after its arrival: a producer clock up to an hour
# fast still counts; beyond, the record is a dead letter (``event_after_arrival``).
EVENT_AHEAD_OF_ARRIVAL_MS = 3_600_000
EVENT_TIME, ARRIVAL_TIME = "event_ts", "ingest_ts"
# What a card_data field holds after validation: its presence survives (the lake's
# has_card_last4), its digits do not leave the ingest boundary.
CARD_DATA_MASK = "****"
_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_Found = tuple[list[str], list[tuple[str, str]]]  # unknown field paths, (dropped path, rule)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    record: dict[str, Any] | None = None
    rule: str | None = None
    field: str | None = None
    message: str | None = None
    unknown_fields: tuple[str, ...] = ()
    dropped_fields: tuple[tuple[str, str], ...] = ()  # (path, rule): sensitive unknown fields


@dataclass
class _Violation(Exception):
    rule: str
    field: str
    message: str
    # Union branches are tried in turn; a deeper failure explains the problem better.
    depth: int = 0


class Validator:
    """Checks records against one schema version; build once, call many times."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.names = named_types(schema)
        top_level = {f["name"] for f in schema["fields"]}
        self.checks_time = {EVENT_TIME, ARRIVAL_TIME} <= top_level

    def validate_bytes(self, raw: bytes | str,
                       writer_schemas: WriterSchemas | None = None) -> Verdict:
        """Decode (``payloads.decode``: JSON, or Confluent Avro given ``writer_schemas``),
        then validate."""
        try:
            record = payloads.decode(raw, writer_schemas)
        except payloads.UndecodablePayload as bad:
            return Verdict(False, rule=bad.rule, message=str(bad))
        return self.validate(record)

    def validate(self, record: dict[str, Any]) -> Verdict:
        unknown: list[str] = []
        dropped: list[tuple[str, str]] = []
        try:
            clean = self._record(self.schema, record, "", (unknown, dropped))
        except _Violation as bad:
            return Verdict(False, rule=bad.rule, field=bad.field, message=bad.message)
        if self.checks_time:
            event, arrival = clean.get(EVENT_TIME), clean.get(ARRIVAL_TIME)
            if isinstance(event, int) and isinstance(arrival, int) and \
                    event - arrival > EVENT_AHEAD_OF_ARRIVAL_MS:
                return Verdict(False, rule="event_after_arrival", field=EVENT_TIME,
                               message=f"event_ts is {(event - arrival) / 3_600_000:.1f} h "
                                       f"after ingest_ts (at most "
                                       f"{EVENT_AHEAD_OF_ARRIVAL_MS // 60_000} min)")
        return Verdict(True, record=clean, unknown_fields=tuple(unknown),
                       dropped_fields=tuple(dropped))

    def _record(self, schema: Schema, value: Any, path: str, found: _Found) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _Violation("wrong_type", path, f"{path}: expected an object")
        out: dict[str, Any] = {}
        known: set[str] = set()
        for spec in schema["fields"]:
            name = spec["name"]
            known.add(name)
            where = f"{path}{name}"
            if name not in value:
                if "default" not in spec:
                    raise _Violation("missing_required_field", where,
                                     f"required field {where!r} is missing")
                out[name] = spec["default"]
                continue
            checked = self._value(spec["type"], value[name], where, spec.get("format"), found)
            if checked is not None and spec.get("data_class") == DataClass.CARD_DATA:
                checked = CARD_DATA_MASK if isinstance(checked, str) else None
            out[name] = checked
        for i, name in enumerate(value):
            if name not in known:
                where = _key_path(path, name, i)
                rule = classify(name, value[name])
                if rule is None:
                    found[0].append(where)
                    out[name] = value[name]
                else:  # never stored: only its path and the rule are reported
                    found[1].append((where, rule))
        return out

    def _value(self, node: Node, value: Any, path: str, fmt: str | None,
               found: _Found) -> Any:
        node = resolve(node, self.names)
        if isinstance(node, list):
            return self._union(node, value, path, fmt, found)
        kind = node if isinstance(node, str) else node["type"]
        if kind == "record":
            return self._record(node, value, f"{path}.", found)
        if kind == "enum":
            if not isinstance(value, str):
                raise _Violation("wrong_type", path, f"{path}: expected a string enum symbol, "
                                                     f"got {_describe(value)}")
            if value not in node["symbols"]:
                raise _Violation("unknown_enum", path, f"{path}: not one of "
                                                       f"{', '.join(node['symbols'])}")
            return value
        if kind == "array":
            if not isinstance(value, list):
                raise _Violation("wrong_type", path, f"{path}: expected an array")
            return [self._value(node["items"], v, f"{path}[{i}]", None, found)
                    for i, v in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise _Violation("wrong_type", path, f"{path}: expected an object (map)")
            return {k: self._value(node["values"], v, _key_path(f"{path}.", k, i), None, found)
                    for i, (k, v) in enumerate(value.items())}
        if kind in PRIMITIVES:
            return self._primitive(kind, value, path, fmt)
        raise _Violation("wrong_type", path, f"{path}: unsupported schema type {kind!r}")

    def _union(self, branches: list[Node], value: Any, path: str, fmt: str | None,
               found: _Found) -> Any:
        if value is None:
            if "null" in branches:
                return None
            raise _Violation("wrong_type", path, f"{path}: null is not allowed")
        best: _Violation | None = None
        for branch in branches:
            if branch == "null":
                continue
            try:
                return self._value(branch, value, path, fmt, found)
            except _Violation as bad:
                if best is None or bad.rule != "wrong_type":
                    best = bad
        assert best is not None
        raise best

    @staticmethod
    def _primitive(kind: str, value: Any, path: str, fmt: str | None) -> Any:
        if kind == "string":
            if not isinstance(value, str):
                raise _Violation("wrong_type", path, f"{path}: expected a string, "
                                                     f"got {_describe(value)}")
            if fmt in FORMAT_RULES:
                rule, check = FORMAT_RULES[fmt]
                if not check(value):
                    raise _Violation(rule, path, f"{path}: not a valid {fmt} code")
            return value
        if kind in ("int", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Violation("wrong_type", path, f"{path}: expected an integer ({kind}), "
                                                     f"got {_describe(value)}")
            low, high = INT_RANGE[kind]
            if not low <= value <= high:
                raise _Violation("wrong_type", path, f"{path}: does not fit in {kind}")
            return value
        if kind in ("float", "double"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _Violation("wrong_type", path, f"{path}: expected a number ({kind}), "
                                                     f"got {_describe(value)}")
            if not math.isfinite(value):
                raise _Violation("wrong_type", path, f"{path}: not a finite number")
            return float(value)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _Violation("wrong_type", path, f"{path}: expected true/false, "
                                                     f"got {_describe(value)}")
            return value
        if kind == "null":
            if value is not None:
                raise _Violation("wrong_type", path, f"{path}: expected null")
            return None
        if kind == "bytes":
            if not isinstance(value, str):
                raise _Violation("wrong_type", path, f"{path}: expected bytes as a string")
            return value
        raise _Violation("wrong_type", path, f"{path}: unsupported type {kind}")


def _describe(value: Any) -> str:
    """What was found instead, by JSON kind only: the value itself may be card data."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            dict: "an object", list: "an array", type(None): "null"}.get(type(value), "a value")


def _key_path(path: str, key: str, index: int) -> str:
    """A field path through a key a producer chose: the key when it reads as a field name,
    else its position (a key may itself hold an e-mail or a card number)."""
    if _SAFE_KEY.match(key) and text_rule(key) is None:
        return f"{path}{key}"
    return f"{path}[key {index}]"


@cache
def validator(subject: str, version: int | None = None) -> Validator:
    """The validator for a subject's latest (or given) schema version."""
    return Validator(schemas.load(subject, version).schema)

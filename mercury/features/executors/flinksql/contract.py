"""A stream's contract as SQL: the check a record must pass to skip the Python validator, and
its fields as typed columns.

The job parses each line once (``JSON_FIELDS``, a small Java function: every top-level field
tagged by its JSON kind, see infra/flink-udf). ``fast_check`` is a conjunction over those tagged
values that only holds for records ``mercury.contracts.validation`` accepts as they are: every
declared field present (or optional), of its type, in its format, and ``event_ts`` at most the
contract's bound after ``ingest_ts``. It is deliberately narrower than the validator (no escapes,
no nested records, integers of at most 18 digits): whatever it does not pass goes to the
validator itself, which names the rule, so the job's verdicts are the validator's by
construction (docs/STREAMING.md, "Validation in the job"). ``tests/flink/test_sql_contract.py``
holds the check to the validator over the generator's malformed and evolved records.

The validator's cleaning holds on the fast path too (docs/COMPLIANCE.md, "Data classes at the
sinks"): a line with any field the contract does not declare goes to the validator, whose
classifier drops the sensitive ones; ``clean_line`` masks the card-data fields as the
validator does, and ``typed`` gives them masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mercury.contracts import schemas
from mercury.contracts.avro_walk import named_types, resolve
from mercury.contracts.data_classes import DataClass
from mercury.contracts.validation import (
    ARRIVAL_TIME,
    CARD_DATA_MASK,
    EVENT_AHEAD_OF_ARRIVAL_MS,
    EVENT_TIME,
)

# Tags written by JSON_FIELDS (and by the Python validator's fields, ``tagged_fields``).
STRING, NUMBER, TRUE, FALSE, NULL = "s", "n", "t", "f", "z"

_FORMAT_PATTERNS = {
    "uuid": "^s[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "mcc": "^s[0-9]{4}$",
}
# An integer JSON literal that surely fits a long (orjson and the validator agree on it).
_INTEGER = "^n-?[0-9]{1,18}$"
# A JSON number that is not a huge integer literal (orjson refuses those).
_NUMBER = "^n-?([0-9]{1,18}|[0-9]+[.][0-9]+([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)$"
_MAX_DOUBLE = "1.7976931348623157E308"


@dataclass(frozen=True)
class Column:
    name: str     # the field's name, also the typed column's name
    sql_type: str  # STRING, BIGINT, DOUBLE, BOOLEAN
    kind: str      # the Avro kind it came from
    card_data: bool = False  # classed card_data: leaves masked


def sql_literal(value: Any) -> str:
    if value is None:
        return "CAST(NULL AS STRING)"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _field(name: str, source: str = "f") -> str:
    return f"{source}[{sql_literal(name)}]"


def _value_check(node: Any, names: dict, ref: str, fmt: str | None) -> str | None:
    """SQL that holds when the tagged value ``ref`` is surely valid for ``node``; None when
    only the Python validator can tell (records, maps, arrays, unions of several types)."""
    node = resolve(node, names)
    if isinstance(node, list):
        branches = [b for b in node if b != "null"]
        if len(branches) != 1:
            return None
        inner = _value_check(branches[0], names, ref, fmt)
        if inner is None:
            return None
        return f"({ref} = '{NULL}' OR {inner})" if "null" in node else inner
    kind = node if isinstance(node, str) else node["type"]
    if kind == "enum":
        return _one_of(ref, node["symbols"])
    if kind == "string":
        if fmt in _FORMAT_PATTERNS:
            return f"REGEXP({ref}, '{_FORMAT_PATTERNS[fmt]}')"
        if fmt is not None:
            from mercury.contracts.validation import FORMAT_RULES

            if fmt not in FORMAT_RULES:
                return f"{ref} LIKE '{STRING}%'"
            return _code_list(ref, fmt)
        return f"{ref} LIKE '{STRING}%'"
    if kind in ("int", "long"):
        if kind == "int":
            return (f"REGEXP({ref}, '^n-?[0-9]{{1,10}}$') AND "
                    f"TRY_CAST(SUBSTR({ref}, 2) AS INT) IS NOT NULL")
        return f"REGEXP({ref}, '{_INTEGER}')"
    if kind in ("float", "double"):
        return (f"REGEXP({ref}, '{_NUMBER}') AND "
                f"ABS(TRY_CAST(SUBSTR({ref}, 2) AS DOUBLE)) <= {_MAX_DOUBLE}")
    if kind == "boolean":
        return f"{ref} IN ('{TRUE}', '{FALSE}')"
    return None


def _one_of(ref: str, values: Any) -> str:
    """A regular expression, not an IN list: the planner's simplifier takes minutes over the
    negation of a conjunction of long IN lists (the judged records' filter)."""
    import re

    alternatives = "|".join(re.escape(v) for v in sorted(values))
    return f"REGEXP({ref}, {sql_literal('^' + STRING + '(' + alternatives + ')$')})"


def _code_list(ref: str, fmt: str) -> str:
    from mercury.contracts.code_lists import COUNTRIES, CURRENCIES, LANGUAGES

    codes = {"iso4217": CURRENCIES, "iso3166_alpha2": COUNTRIES, "iso639_1": LANGUAGES}[fmt]
    return _one_of(ref, codes)


def _sql_type(node: Any, names: dict) -> tuple[str, str]:
    node = resolve(node, names)
    if isinstance(node, list):
        branches = [b for b in node if b != "null"]
        return _sql_type(branches[0], names) if len(branches) == 1 else ("STRING", "json")
    kind = node if isinstance(node, str) else node["type"]
    if kind in ("int", "long"):
        return "BIGINT", kind
    if kind in ("float", "double"):
        return "DOUBLE", kind
    if kind == "boolean":
        return "BOOLEAN", kind
    if kind in ("string", "enum"):
        return "STRING", kind
    return "STRING", "json"


@dataclass(frozen=True)
class StreamContract:
    subject: str
    fast_check: str           # SQL over the tagged map ``f``; FALSE when nothing is fast
    columns: tuple[Column, ...]
    clean_line: str = "line"  # SQL: a fast line as the validator's record leaves it

    def typed(self, name: str, source: str = "f") -> str:
        """SQL of field ``name`` (a path ``after.user_id`` for nested records) as its type."""
        column = self.column(name)
        ref = _field(name, source)
        if column.card_data:  # the validator's mask; non-string card data is never fast
            return f"CASE WHEN {ref} LIKE '{STRING}%' THEN {sql_literal(CARD_DATA_MASK)} END"
        if column.sql_type == "STRING" and column.kind != "json":
            return f"CASE WHEN {ref} LIKE '{STRING}%' THEN SUBSTR({ref}, 2) END"
        if column.sql_type == "BIGINT":
            return f"TRY_CAST(CASE WHEN {ref} LIKE '{NUMBER}%' THEN SUBSTR({ref}, 2) END AS BIGINT)"
        if column.sql_type == "DOUBLE":
            return f"TRY_CAST(CASE WHEN {ref} LIKE '{NUMBER}%' THEN SUBSTR({ref}, 2) END AS DOUBLE)"
        if column.sql_type == "BOOLEAN":
            return f"CASE {ref} WHEN '{TRUE}' THEN TRUE WHEN '{FALSE}' THEN FALSE END"
        return ref  # a nested value stays tagged (the writer decodes it)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.subject} has no field {name!r}")


def compile_contract(subject: str) -> StreamContract:
    schema = schemas.load(subject).schema
    names = named_types(schema)
    checks = ["f IS NOT NULL", "f['#repeated'] IS NULL",
              # Escapes and undecodable bytes are where JSON parsers disagree (lone
              # surrogates, U+FFFD for bad UTF-8): such lines go to the validator.
              "POSITION('\\' IN line) = 0", "POSITION(U&'\\FFFD' IN line) = 0"]
    columns: list[Column] = []
    fast = True
    for spec in schema["fields"]:
        name = spec["name"]
        check = _value_check(spec["type"], names, _field(name), spec.get("format"))
        if spec.get("data_class") == DataClass.CARD_DATA and \
                _sql_type(spec["type"], names)[1] != "string":
            check = None  # ``clean_line`` masks strings only
        if check is None:
            fast = False
        elif "default" in spec:
            default_null = spec["default"] is None
            checks.append(f"({_field(name)} IS NULL OR {check})" if default_null else check)
        else:
            checks.append(f"{_field(name)} IS NOT NULL AND {check}")
        columns.extend(_columns(name, spec["type"], names,
                                spec.get("data_class") == DataClass.CARD_DATA))
    # Only declared fields: an unknown one may be card data, which only the validator's
    # classifier can tell (schema evolution's cost: such lines take the Python path until
    # the contract declares the field).
    declared = " + ".join(f"CASE WHEN {_field(spec['name'])} IS NULL THEN 0 ELSE 1 END"
                          for spec in schema["fields"])
    checks.append(f"CARDINALITY(f) = {declared}")
    top = {c.name for c in columns}
    if {EVENT_TIME, ARRIVAL_TIME} <= top:
        checks.append(f"TRY_CAST(SUBSTR({_field(EVENT_TIME)}, 2) AS BIGINT) - "
                      f"TRY_CAST(SUBSTR({_field(ARRIVAL_TIME)}, 2) AS BIGINT) "
                      f"<= {EVENT_AHEAD_OF_ARRIVAL_MS}")
    fast_check = "\n    AND ".join(checks) if fast else "FALSE"
    return StreamContract(subject, fast_check, tuple(columns), _clean_line(schema))


def _clean_line(schema: dict) -> str:
    """SQL masking each top-level card-data string of a fast line. Exact there: a fast line
    has no escapes and only declared, flat fields, so ``"name":"..."`` is that field."""
    line = "line"
    for spec in schema["fields"]:
        if spec.get("data_class") == DataClass.CARD_DATA:
            name = spec["name"]  # Flink's REGEXP_REPLACE takes no group reference
            found = sql_literal(f'"{name}"\\s*:\\s*"[^"]*"')
            masked = sql_literal(f'"{name}":"{CARD_DATA_MASK}"')
            line = f"REGEXP_REPLACE({line}, {found}, {masked})"
    return line


def _columns(name: str, node: Any, names: dict, card_data: bool = False) -> list[Column]:
    """The typed column of a field; a nested record (a CDC envelope's ``after``) also gives
    one column per field of its own, named by path."""
    resolved = resolve(node, names)
    branches = resolved if isinstance(resolved, list) else [resolved]
    records = [resolve(b, names) for b in branches if b != "null"]
    records = [r for r in records if isinstance(r, dict) and r.get("type") == "record"]
    if len(records) == 1:
        return [Column(name, "STRING", "json")] + [
            c for spec in records[0]["fields"]
            for c in _columns(f"{name}.{spec['name']}", spec["type"], names,
                              spec.get("data_class") == DataClass.CARD_DATA)]
    sql_type, kind = _sql_type(node, names)
    return [Column(name, sql_type, kind, card_data=card_data)]


def tagged_fields(record: dict[str, Any]) -> dict[str, str]:
    """A validated record as JSON_FIELDS would tag it, nested records flattened by path: what
    the job's Python validator gives the SQL for the records it accepted."""
    import orjson

    out: dict[str, str] = {}

    def put(path: str, value: Any, depth: int) -> None:
        if value is None:
            out[path] = NULL
        elif isinstance(value, bool):
            out[path] = TRUE if value else FALSE
        elif isinstance(value, (int, float)):
            out[path] = NUMBER + repr(value)
        elif isinstance(value, str):
            out[path] = STRING + value
        elif isinstance(value, dict):
            out[path] = "o" + orjson.dumps(value).decode()
            if depth == 0:
                for key, inner in value.items():
                    put(f"{path}.{key}", inner, depth + 1)
        else:
            out[path] = "a" + orjson.dumps(value).decode()

    for key, value in record.items():
        put(key, value, 0)
    return out

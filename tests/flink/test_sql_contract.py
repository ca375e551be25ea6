"""The SQL job's contract check against the contract's own validator, on the generator's
malformed and evolved records and on hostile lines written here (batch mode, no cluster).

The job passes a line without the Python validator only when the SQL check holds; the check
must hold for no line the validator refuses (soundness), and the typed columns it gives must be
the validator's values. Whatever the check leaves goes to the validator, so verdicts are the
validator's; the test also reports how much of the valid traffic the check keeps off Python.
A passed line leaves cleaned as the validator cleans it (card data masked, no unknown field).
Needs the job's Java function (``make setup`` builds it with javac).
"""

from __future__ import annotations

import os

import orjson
import pytest

pytest.importorskip("pyflink.table", reason="PyFlink lives in the Flink env "
                    "(infra/envs/flink/.venv); tests/test_flink_env.py runs these tests there")

from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment  # noqa: E402

from mercury.contracts import registry  # noqa: E402
from mercury.contracts.validation import validator  # noqa: E402
from mercury.features.definition.transforms import FUNCTIONS, MCC_CATEGORIES  # noqa: E402
from mercury.features.executors.flinksql.contract import compile_contract  # noqa: E402
from mercury.features.executors.flinksql.job import UDF_JAR, udf_jar_url  # noqa: E402
from mercury.features.executors.flinksql.plan import SQL_FUNCTIONS  # noqa: E402

STREAMS = ("transactions", "user_activity", "risk_signals")
BASE = {
    "transactions": {
        "event_id": "0badc0de-0000-4000-8000-000000000001", "user_id": "usr_1",
        "account_id": "acc_1", "merchant_id": "mch_1", "amount": 12.5, "currency": "EUR",
        "event_type": "AUTH", "event_ts": 1_793_491_659_648, "ingest_ts": 1_793_491_661_261,
        "risk_score": 0.37, "mcc_code": "5411", "country": "DE", "purchase_id": "pur_1",
        "auth_decision": "APPROVED", "decline_reason": None, "reversal_reason": None,
        "card_last4": "4242"},
}


def _hostile(stream: str, record: dict) -> list[str]:
    """Lines a careless or hostile producer writes, around one valid record."""
    good = orjson.dumps(record).decode()
    lines = [good, good.replace('"usr_1"', '"usr_\\u00e9"'),      # an escape: judged
             good[:-1] + ',"pan":"4111111111111111"}',             # an unknown field
             good[:-1] + ',"user_id":"usr_2"}',                    # a repeated key
             good + " x", "[" + good + "]", "null", "", "{", good.replace("12.5", "NaN"),
             good.replace("12.5", "1e400"), good.replace("12.5", "99999999999999999999999"),
             good.replace("12.5", "12"), good.replace("12.5", '"12.5"'),
             good.replace('"EUR"', '"eur"'), good.replace('"EUR"', '"XXX"'),
             good.replace('"AUTH"', '"auth"'), good.replace('"5411"', '"541"'),
             good.replace("1793491659648", "1793491659648.0"),
             good.replace("1793491659648", "99999999999999999999"),
             good.replace("1793491659648", "1893491659648"),       # 27 000 h after arrival
             good.replace('"0badc0de-0000-4000-8000-000000000001"', '"not-a-uuid"'),
             good.replace('"usr_1"', "7"), good.replace('"usr_1"', "null"),
             good.replace('"purchase_id":"pur_1",', ""),            # optional: default
             good.replace('"event_type":"AUTH",', ""),              # required: missing
             good.replace('"risk_score":0.37', '"risk_score":true'),
             good.replace('"card_last4":"4242"', '"card_last4":4242'),
             good.encode().decode("utf-8") + "\ufffd"]
    return lines


def _generated(tmp_path) -> dict[str, list[str]]:
    from mercury.config import load_settings
    from mercury.eventlog.file_log import FileEventReader
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from tests.conftest import write_config

    os.environ["MERCURY_CONFIG"] = str(write_config(tmp_path))
    settings = load_settings()
    generate(settings, Knobs(events=4_000, users=100, seed=5, malformed_rate=0.15,
                             evolved_rate=0.15), with_postgres=False, show_progress=False)
    reader = FileEventReader(settings.event_log.root)
    return {s: [m.value.decode("utf-8", errors="replace") for m in reader.read(s)]
            for s in STREAMS}


@pytest.fixture(scope="module")
def t_env():
    if not UDF_JAR.exists():
        pytest.fail(f"{UDF_JAR} is missing: `make setup` builds it")
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.execute_sql("CREATE TEMPORARY SYSTEM FUNCTION JSON_FIELDS AS "
                      "'com.mercurypay.flink.JsonFields' LANGUAGE JAVA "
                      f"USING JAR '{udf_jar_url()}'")
    return t_env


def _judge(t_env, stream: str, lines: list[str]) -> list[tuple]:
    contract = compile_contract(registry.stream(stream).schema_subject)
    columns = [c for c in contract.columns if c.kind != "json"]
    table = t_env.from_elements([(i, line) for i, line in enumerate(lines)],
                                DataTypes.ROW([DataTypes.FIELD("n", DataTypes.INT()),
                                               DataTypes.FIELD("line", DataTypes.STRING())]))
    t_env.create_temporary_view("raw_lines", table)
    typed = ", ".join(f"{contract.typed(c.name)} AS `{c.name}`" for c in columns)
    sql = (f"SELECT n, ({contract.fast_check}) AS fast, {contract.clean_line} AS cleaned, {typed} "
           f"FROM raw_lines, LATERAL TABLE(JSON_FIELDS(line)) AS parsed(f)")
    try:
        with t_env.sql_query(sql).execute().collect() as rows:
            return sorted((tuple(r) for r in rows), key=lambda r: r[0])
    finally:
        t_env.drop_temporary_view("raw_lines")


@pytest.mark.parametrize("stream", STREAMS)
def test_the_sql_check_passes_only_what_the_validator_accepts_with_its_values(
        t_env, tmp_path, stream):
    lines = _generated(tmp_path)[stream]
    if stream in BASE:
        lines += _hostile(stream, BASE[stream])
    check = validator(registry.stream(stream).schema_subject)
    contract = compile_contract(registry.stream(stream).schema_subject)
    names = [c.name for c in contract.columns if c.kind != "json"]
    rows = _judge(t_env, stream, lines)
    assert len(rows) == len(lines)  # one row per line, whatever it holds

    fast = valid = evolved = 0
    for n, is_fast, cleaned, *values in rows:
        verdict = check.validate_bytes(lines[n].encode())
        valid += verdict.ok
        evolved += bool(verdict.unknown_fields or verdict.dropped_fields)
        if not is_fast:
            continue  # the validator judges it, in the job as here
        fast += 1
        assert verdict.ok, f"the SQL check passed a line the validator refuses " \
                           f"({verdict.rule}): {lines[n]!r}"
        record = verdict.record
        for name, value in zip(names, values, strict=True):
            assert value == record.get(name), (name, value, record.get(name), lines[n])
        left = orjson.loads(cleaned)  # what the job stages: the validator's record, minus defaults
        assert left == {k: record[k] for k in left}, lines[n]
    print(f"{stream}: {fast}/{valid} valid lines pass the SQL check ({len(lines)} lines, "
          f"{evolved} with unknown fields)")
    # The hostile ones, and lines with fields the contract does not declare yet, are judged in
    # Python.
    assert valid > 0 and fast >= 0.9 * (valid - evolved) - 30


def test_derived_columns_in_sql_equal_their_python(t_env):
    codes = sorted(MCC_CATEGORIES) + ["0000", None]
    rows = [(c, t, d, r) for c in codes for t in ("AUTH", "SETTLEMENT", "REVERSAL", None)
            for d in ("APPROVED", "DECLINED", None) for r in ("CHARGEBACK", "MERCHANT_VOID", None)]
    table = t_env.from_elements(rows, DataTypes.ROW([
        DataTypes.FIELD("mcc_code", DataTypes.STRING()),
        DataTypes.FIELD("event_type", DataTypes.STRING()),
        DataTypes.FIELD("auth_decision", DataTypes.STRING()),
        DataTypes.FIELD("reversal_reason", DataTypes.STRING())]))
    t_env.create_temporary_view("derived_input", table)
    sql = (f"SELECT mcc_code, event_type, auth_decision, reversal_reason, "
           f"{SQL_FUNCTIONS['mcc_category']('mcc_code')}, "
           f"{SQL_FUNCTIONS['purchase_status']('event_type', 'auth_decision', 'reversal_reason')}"
           f" FROM derived_input")
    try:
        with t_env.sql_query(sql).execute().collect() as results:
            got = [tuple(r) for r in results]
    finally:
        t_env.drop_temporary_view("derived_input")
    assert len(got) == len(rows)
    for mcc, event_type, decision, reason, category, status in got:
        assert category == FUNCTIONS["mcc_category"](mcc)
        assert status == FUNCTIONS["purchase_status"](event_type, decision, reason)

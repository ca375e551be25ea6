"""The SQL job's first views on literal lines (batch mode, no cluster): what it stages is the
validator's cleaned record, and a key-only CDC delete becomes the same event as in the
reference executor (docs/COMPLIANCE.md, "Data classes at the sinks")."""

from __future__ import annotations

import orjson
import pytest

pytest.importorskip("pyflink.table", reason="PyFlink lives in the Flink env "
                    "(tests/test_flink_env.py runs this module there)")

from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment  # noqa: E402
from pyflink.table.udf import udf  # noqa: E402

from mercury.features.definitions.assistant import profile, spending  # noqa: E402
from mercury.features.executors.events import normalise  # noqa: E402
from mercury.features.executors.flinksql.plan import StreamPlan  # noqa: E402
from mercury.features.executors.flinksql.udfs import VERDICT, ValidateLine  # noqa: E402
from mercury.features.executors.reference import valid_record  # noqa: E402
from tests.flink.java_functions import register_java_functions  # noqa: E402

PAN = "4111111111111111"
TX = {"event_id": "0badc0de-0000-4000-8000-000000000001", "user_id": "usr_1",
      "account_id": "acc_1", "merchant_id": "mch_1", "amount": 12.5, "currency": "EUR",
      "event_type": "SETTLEMENT", "event_ts": 1_793_491_659_648,
      "ingest_ts": 1_793_491_661_261, "risk_score": 0.37, "mcc_code": "5411", "country": "DE",
      "purchase_id": "pur_1", "card_last4": "4242"}
ROW = {"user_id": "usr_9", "full_name": "Ana Smith", "email": "ana@example.com",
       "locale": "en-GB", "home_country": "GB", "risk_tier": "LOW", "kyc_status": "VERIFIED",
       "notification_prefs": {"email": True}, "updated_at": 1_793_491_200_000}


def _change(op: str, lsn: int, **fields) -> dict:
    return {"before": None, "after": None, "op": op,
            "source": {"connector": "postgresql", "db": "d", "schema": "s", "table": "t",
                       "lsn": lsn, "tx_id": 7, "ts_ms": 1_793_491_300_000},
            "ts_ms": 1_793_491_300_000, **fields}


@pytest.fixture(scope="module")
def t_env():
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "1")
    register_java_functions(t_env)
    t_env.create_temporary_system_function("validate_line",
                                           udf(ValidateLine(), result_type=VERDICT))
    return t_env


def _run(t_env, plan: StreamPlan, lines: list[str], view: str, columns: str) -> list[tuple]:
    raw = t_env.from_elements(
        [(line, f"p:{i}") for i, line in enumerate(lines)],
        DataTypes.ROW([DataTypes.FIELD("line", DataTypes.STRING()),
                       DataTypes.FIELD("line_position", DataTypes.STRING())]))
    t_env.create_temporary_view(f"raw_{plan.name}_lines", raw)
    t_env.execute_sql(f"CREATE TEMPORARY VIEW raw_{plan.name} AS SELECT line, line_position, "
                      f"CURRENT_TIMESTAMP AS pt FROM raw_{plan.name}_lines")
    created = []
    try:
        for statement in plan.statements():
            t_env.execute_sql(statement.text())
            created.append(statement.name)
            if statement.name == f"{view}_{plan.name}":
                break
        with t_env.sql_query(f"SELECT {columns} FROM {view}_{plan.name}").execute().collect() \
                as rows:
            return sorted(tuple(r) for r in rows)
    finally:
        for name in reversed(created):
            t_env.drop_temporary_view(name)
        t_env.drop_temporary_view(f"raw_{plan.name}")
        t_env.drop_temporary_view(f"raw_{plan.name}_lines")


def test_what_the_job_stages_is_the_validators_cleaned_record(t_env):
    """Catches the raw line staged (the pan in staged files and late events) on either path:
    the fast one (no unknown field) and the judged one (an unknown field)."""
    lines = [orjson.dumps(TX).decode(),
             orjson.dumps({**TX, "event_id": TX["event_id"][:-1] + "2", "pan": PAN,
                           "wallet_type": "NONE"}).decode()]
    plan = StreamPlan("transactions", (spending,))
    staged = _run(t_env, plan, lines, "valid", "line_position, record_json")
    assert len(staged) == 2
    for (position, record_json), line in zip(staged, lines, strict=True):
        assert PAN not in record_json and '"4242"' not in record_json
        record = orjson.loads(record_json)
        expected = valid_record("transactions", line.encode())
        assert record == {k: expected[k] for k in record}, position
    assert orjson.loads(staged[1][1])["wallet_type"] == "NONE"  # clean unknown fields flow


def test_a_key_only_delete_is_the_reference_executors_event(t_env):
    """Catches the SQL reading the entity of a delete from ``before`` only (v2 has none)."""
    changes = [_change("c", 10, after=ROW, key={"user_id": "usr_9"}),
               _change("d", 20, key={"user_id": "usr_9"}),
               _change("d", 30, before={**ROW, "user_id": "usr_8"})]  # a v1 delete
    lines = [orjson.dumps(c).decode() for c in changes]
    plan = StreamPlan("user_profile_cdc", (profile,))
    got = _run(t_env, plan, lines, "events", "event_id, entity_id, event_ts, deleted")
    want = []
    for line in lines:
        event = normalise(profile, valid_record("user_profile_cdc", line.encode()))
        want.append((event.event_id, event.entity_id, event.event_ts, event.deleted))
    assert got == sorted(want)

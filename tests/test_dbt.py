"""The dbt project: `dbt build` on DuckDB over the Iceberg lake, and on Snowflake's dialect
through a fakesnow server."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import pytest

from mercury.warehouse.dbt_runner import DbtRunError, run_dbt
from tests.lake_fixtures import snowflake_source_ddl

STAGING_COLUMNS = [
    "event_id", "user_id", "account_id", "merchant_id", "purchase_id", "installment_plan_id",
    "event_type", "auth_decision", "decline_reason", "reversal_reason", "amount", "currency",
    "risk_score", "mcc_code", "country", "has_card_last4", "event_ts", "ingest_ts",
]
UNIT_TEST = "stg_lake__transactions_casts_and_masks"
# The transactions source and everything built on it; the audit models, whose lake tables these
# tests do not create, are built in tests/test_audit_warehouse.py.
LAKE_MODELS = ["--select", "source:lake+"]


def _naive_utc(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).replace(tzinfo=None)


def test_dbt_build_on_duckdb_reads_the_iceberg_lake(transactions_lake):
    settings = transactions_lake.settings
    result = run_dbt(["build", *LAKE_MODELS], settings=settings)

    assert result.success and not result.failed, result.summary()
    assert result.status_of(UNIT_TEST) == "pass"
    assert result.status_of("stg_lake__transactions") == "success"
    assert result.status_of("unique_stg_lake__transactions_event_id") == "pass"

    with duckdb.connect(str(settings.warehouse.duckdb_path), read_only=True) as con:
        cursor = con.execute("select * from analytics.stg_lake__transactions order by event_id")
        columns = [d[0] for d in cursor.description]
        rows = {row[0]: dict(zip(columns, row, strict=True)) for row in cursor.fetchall()}
    assert columns == STAGING_COLUMNS  # card_last4 does not pass staging

    expected = transactions_lake.expected
    assert set(rows) == set(expected)
    for event_id, record in expected.items():
        row = rows[event_id]
        assert row["amount"] == Decimal(str(record["amount"])).quantize(Decimal("0.01"))
        assert row["currency"] == record["currency"].upper()
        assert row["event_ts"] == _naive_utc(record["event_ts"])
        assert row["ingest_ts"] == _naive_utc(record["ingest_ts"])
        assert row["has_card_last4"] is (record["card_last4"] is not None)
        assert row["installment_plan_id"] == record.get("installment_plan_id")
        for name in ("event_type", "purchase_id", "auth_decision", "decline_reason",
                     "reversal_reason", "mcc_code", "merchant_id"):
            assert row[name] == record[name], (event_id, name)
    assert {r["currency"] for r in rows.values()} == {"USD", "EUR", "JPY", "GBP", "CAD"}
    retried = transactions_lake.records[-1]["event_id"]
    assert rows[retried]["amount"] == Decimal("1500.00")  # the first arrival won in the lake


def test_dbt_failure_names_the_failed_nodes(tmp_settings):
    # No lake table yet: the staging model cannot read its source.
    with pytest.raises(DbtRunError) as caught:
        run_dbt(["run", "--select", "stg_lake__transactions"], settings=tmp_settings)
    assert [n.name for n in caught.value.failed] == ["stg_lake__transactions"]
    assert "model.mercury.stg_lake__transactions" in str(caught.value)


def test_dbt_build_on_snowflake_dialect_via_fakesnow(fakesnow_server, tmp_settings):
    with fakesnow_server.connect() as con:
        cur = con.cursor()
        cur.execute(f"create database if not exists {fakesnow_server.database}")
        cur.execute(f"create schema if not exists {fakesnow_server.database}.raw")
        cur.execute(snowflake_source_ddl(f"{fakesnow_server.database}.raw.transactions"))
        cur.execute(
            f"insert into {fakesnow_server.database}.raw.transactions "
            "(event_id, user_id, account_id, merchant_id, amount, currency, event_type, "
            "event_ts, ingest_ts, risk_score, mcc_code, country, purchase_id, auth_decision, "
            "decline_reason, reversal_reason, card_last4, installment_plan_id) values "
            "('e1', 'u1', 'a1', 'm1', 19.99, 'usd', 'AUTH', '2024-03-01 13:30:00+01:00', "
            "'2024-03-01 12:30:01+00:00', 0.25, '0742', 'us', 'p1', 'DECLINED', "
            "'INSUFFICIENT_FUNDS', null, '4242', null), "
            "('e2', 'u2', 'a2', 'm2', 5, 'EUR', 'REVERSAL', '2024-03-02 00:00:00+00:00', "
            "'2024-03-02 00:00:05+00:00', 0.0, '5411', 'DE', null, null, null, 'CHARGEBACK', "
            "null, 'bnpl_1')")

    # dbt's unit tests create temporary tables in a database-qualified name, which fakesnow
    # cannot do; they run on DuckDB above. Everything else runs on the Snowflake adapter.
    result = run_dbt(["build", *LAKE_MODELS, "--exclude-resource-type", "unit_test"],
                     target="snowflake",
                     env_extra=fakesnow_server.dbt_env, settings=tmp_settings)
    assert result.success and not result.failed
    assert result.status_of("stg_lake__transactions") == "success"
    assert result.status_of("unique_stg_lake__transactions_event_id") == "pass"

    with fakesnow_server.connect() as con:
        cur = con.cursor()
        cur.execute(f"select event_id, amount, currency, country, event_ts, ingest_ts, "
                    f"has_card_last4 from {fakesnow_server.database}.analytics"
                    f".stg_lake__transactions order by event_id")
        rows = cur.fetchall()
    assert rows == [
        ("e1", Decimal("19.99"), "USD", "US", datetime(2024, 3, 1, 12, 30),
         datetime(2024, 3, 1, 12, 30, 1), True),
        ("e2", Decimal("5.00"), "EUR", "DE", datetime(2024, 3, 2), datetime(2024, 3, 2, 0, 0, 5),
         False),
    ]

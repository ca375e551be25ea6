"""Fixtures for the lake, the warehouse (dbt) and the quality gate: record builders, a small
lake of awkward transactions, and a fakesnow server standing in for Snowflake.

Config comes from ``tmp_settings`` (conftest): every path is under the test's temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mercury.config import Settings

BASE_MS = 1_709_294_400_000  # 2024-03-01T12:00:00Z


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO timestamp with offset."""
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def utc(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def transaction(n: int, **overrides) -> dict:
    """A valid transaction record (as validated from the stream: defaults filled, times in ms).

    ``n`` picks a deterministic event id, user and time; keyword arguments override fields.
    """
    event_ts = BASE_MS + n * 60_000
    record = {
        "event_id": str(uuid.UUID(int=n + 1)),
        "user_id": f"usr_{n % 7}",
        "account_id": f"acc_{n % 5}",
        "merchant_id": f"mer_{n % 11}",
        "amount": round(1 + n * 1.25, 2),
        "currency": "USD",
        "event_type": "AUTH",
        "event_ts": event_ts,
        "ingest_ts": event_ts + 150,
        "risk_score": 0.05,
        "mcc_code": "5411",
        "country": "US",
        "purchase_id": f"pur_{n}",
        "auth_decision": "APPROVED",
        "decline_reason": None,
        "reversal_reason": None,
        "card_last4": None,
        "installment_plan_id": None,
    }
    record.update(overrides)
    return record


def awkward_transactions() -> list[dict]:
    """Rows that exercise the lake and the staging model: nulls in every optional column,
    unknown extra fields, several currencies, a declined AUTH, a chargeback days later, an
    event just before midnight UTC, a v1-shaped record without the v2 field, card digits, and
    a producer retry (same event id, later arrival, different payload) that must not win."""
    rows = [
        transaction(0, card_last4="4242", installment_plan_id="bnpl_1"),
        transaction(1, currency="EUR", country="DE", amount=19.99, purchase_id=None,
                    auth_decision=None, card_last4=None, installment_plan_id=None,
                    loyalty_tier="gold", device={"os": "ios"}),  # unknown fields: dropped
        transaction(2, currency="JPY", country="JP", amount=1500.0, auth_decision="DECLINED",
                    decline_reason="SUSPECTED_FRAUD", risk_score=0.97),
        transaction(3, currency="GBP", country="GB", event_type="SETTLEMENT",
                    auth_decision=None, mcc_code="0742",
                    event_ts=ms("2024-03-01T23:59:59.999+00:00"),
                    ingest_ts=ms("2024-03-02T00:00:00.250+00:00")),
        transaction(4, event_type="REVERSAL", auth_decision=None,
                    reversal_reason="CHARGEBACK", purchase_id="pur_0",
                    event_ts=BASE_MS + 3 * 86_400_000, ingest_ts=BASE_MS + 3 * 86_400_000 + 5),
        transaction(5, currency="CAD", country="CA", risk_score=0.0, amount=0.0,
                    merchant_id="café-zürich"),
    ]
    v1_shaped = transaction(6, currency="EUR", country="FR")
    del v1_shaped["installment_plan_id"]
    rows.append(v1_shaped)
    retry = transaction(2, amount=9999.0, ingest_ts=transaction(2)["ingest_ts"] + 5_000)
    rows.append(retry)
    return rows


@dataclass(frozen=True)
class TransactionsLake:
    settings: Settings
    records: list[dict]  # as written, retry included

    @property
    def expected(self) -> dict[str, dict]:
        """What the lake should hold: per event id, the earliest-arrived copy."""
        kept: dict[str, dict] = {}
        for record in self.records:
            current = kept.get(record["event_id"])
            if current is None or record["ingest_ts"] < current["ingest_ts"]:
                kept[record["event_id"]] = record
        return kept


@pytest.fixture
def transactions_lake(tmp_settings) -> TransactionsLake:
    """A temporary lake whose ``raw.transactions`` holds ``awkward_transactions()``."""
    from mercury.lake import tables

    records = awkward_transactions()
    tables.upsert(tmp_settings, "transactions", records)
    return TransactionsLake(tmp_settings, records)


# --- fakesnow ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakesnowServer:
    host: str
    port: int
    database: str = "MERCURY"

    def connect(self, schema: str | None = None):
        import snowflake.connector

        return snowflake.connector.connect(
            user="mercury", password="fake", account="fakesnow", host=self.host,
            port=self.port, protocol="http", database=self.database, schema=schema)

    @property
    def dbt_env(self) -> dict[str, str]:
        """SNOWFLAKE_* values for the dbt profile's ``snowflake`` target."""
        return {
            "SNOWFLAKE_ACCOUNT": "fakesnow",
            "SNOWFLAKE_USER": "mercury",
            "SNOWFLAKE_PASSWORD": "fake",
            "SNOWFLAKE_DATABASE": self.database,
            "SNOWFLAKE_WAREHOUSE": "TRANSFORMING",
            "SNOWFLAKE_HOST": self.host,
            "SNOWFLAKE_PORT": str(self.port),
            "SNOWFLAKE_PROTOCOL": "http",
        }


def compact_into_lake(settings: Settings, records: dict[str, list[dict]]) -> None:
    """Validated records (per stream, in arrival order) staged as the streaming job stages
    them and committed to the lake by the compaction step, as in production."""
    import orjson

    from mercury.lake import compact

    staged = compact.staging_dir(settings) / compact.VALIDATED
    staged.mkdir(parents=True, exist_ok=True)
    with open(staged / "part-0.json", "wb") as f:
        for stream, rows in records.items():
            for i, record in enumerate(rows):
                f.write(orjson.dumps({"stream": stream, "position": f"{stream}:{i}",
                                      "record": record}) + b"\n")
    compact.compact(settings)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fakesnow_server(tmp_path_factory):
    """``fakesnow -s -p PORT`` in a subprocess (in-memory databases), stopped afterwards."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("fakesnow") / "server.log"
    executable = Path(sys.executable).parent / "fakesnow"
    command = [str(executable)] if executable.is_file() else [sys.executable, "-m", "fakesnow"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*command, "-s", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"fakesnow exited with {proc.returncode}: {log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"fakesnow did not listen on {port}: {log_path.read_text()}")
                time.sleep(0.1)
        yield FakesnowServer(host="localhost", port=port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def snowflake_type(dtype) -> str:
    """The Snowflake column type of an Arrow type of a lake table."""
    import pyarrow as pa

    if pa.types.is_timestamp(dtype):
        return "timestamp_tz" if dtype.tz else "timestamp_ntz"
    if pa.types.is_floating(dtype):
        return "double"
    if pa.types.is_integer(dtype):
        return "number(38, 0)"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "varchar"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return "array"
    if pa.types.is_map(dtype):
        return "object"
    raise TypeError(f"no Snowflake type for {dtype} in these fixtures")


def snowflake_source_ddl(table: str, subject: str = "transaction",
                         not_null: bool = True) -> str:
    """CREATE TABLE for a lake table as Snowflake sees it, from the contract of ``subject``."""
    from mercury.lake.tables import arrow_schema

    columns = ", ".join(
        f"{f.name} {snowflake_type(f.type)}{'' if f.nullable or not not_null else ' not null'}"
        for f in arrow_schema(subject))
    return f"create or replace table {table} ({columns})"

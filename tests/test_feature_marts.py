"""dbt over the offline feature history: staging and the analysts' marts, on DuckDB over the
Iceberg lake, held to numbers computed straight from the transactions; and the same models on
Snowflake's dialect through fakesnow.

The history tables are written in the layout ``mercury.features.offline.history`` writes
(``ensure_table``, ``to_rows``), from the reference executor's values at the end of each day
(the Spark backfill is held to that reference in tests/test_feature_history.py, and runs for
real in tests/test_feature_backfill_dag.py). The expected marts come from
``tests.feature_history_fixtures.expected_daily``, which shares no code with either.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import duckdb
import orjson
import pyarrow as pa
import pytest

from mercury.features.definition.compile import load_compiled
from mercury.features.executors.events import normalise
from mercury.features.executors.reference import first_arrivals, values_for
from mercury.features.offline import history
from mercury.warehouse.dbt_runner import run_dbt
from tests.feature_history_fixtures import day_end_ms, expected_daily, history_stream

FIRST_DAY = date(2024, 3, 4)
DAYS = 10  # longer than 7 days, so 7d and 30d windows differ
LAST_DAY = FIRST_DAY + timedelta(days=DAYS - 1)
FEATURE_MODELS = ["--select", "source:features+"]
DAILY = "fct_user_daily_spending"
BY_CURRENCY = "fct_user_daily_spending_by_currency"
BY_REASON = "fct_user_daily_declines_by_reason"


def write_history(settings, ref: str, records: list[dict], first: date, last: date) -> int:
    """The history table of ``ref`` for [first, last], as the backfill lays it out."""
    (fs,) = load_compiled([ref])
    events = first_arrivals([e for r in records if (e := normalise(fs, r)) is not None])
    entity_ids, as_of, texts = [], [], []
    day = first
    while day <= last:
        t = day_end_ms(day)
        for entity, values in sorted(values_for(fs, events, t).items()):
            entity_ids.append(entity)
            as_of.append(t)
            texts.append(orjson.dumps(values).decode())
        day += timedelta(days=1)
    result = pa.table({"entity_id": pa.array(entity_ids, pa.string()),
                       "as_of_ms": pa.array(as_of, pa.int64()),
                       "values": pa.array(texts, pa.string())})
    rows = history.to_rows(fs, result, datetime(2024, 3, 10, tzinfo=UTC))
    history.ensure_table(settings, fs).append(rows)
    return rows.num_rows


@pytest.fixture(scope="module")
def history_lake(tmp_path_factory):
    """A private lake with the spending and declines histories of ``history_stream``."""
    from mercury.config import load_settings
    from tests.conftest import write_config

    folder = tmp_path_factory.mktemp("feature_marts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(write_config(folder)))
        settings = load_settings()
        records = history_stream(FIRST_DAY, DAYS, per_day=12)
        rows = {ref: write_history(settings, ref, records, FIRST_DAY, LAST_DAY)
                for ref in ("spending.v1", "declines.v1")}
        yield settings, records, rows


def _query(settings, sql: str) -> list[dict]:
    with duckdb.connect(str(settings.warehouse.duckdb_path), read_only=True) as con:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_marts_equal_the_transactions_recomputed(history_lake):
    settings, records, rows = history_lake
    result = run_dbt(["build", *FEATURE_MODELS], settings=settings)
    assert result.success and not result.failed, result.summary()
    assert result.status_of("fct_user_daily_spending_flattens_the_history") == "pass"
    assert result.status_of(f"unique_{DAILY}_user_day_id") == "pass"
    assert result.status_of(f"unique_{BY_CURRENCY}_user_day_currency_id") == "pass"

    daily, by_currency, by_reason = expected_daily(records, FIRST_DAY, LAST_DAY)
    got_daily = {(r["user_id"], r["as_of_date"]): r for r in
                 _query(settings, f"select * from analytics_features.{DAILY}")}
    assert len(got_daily) == rows["spending.v1"] == len(daily)
    assert set(got_daily) == set(daily)
    # The late user appears only from the day its event arrived, not its event day.
    assert ("usr_late", FIRST_DAY) not in got_daily and ("usr_late", LAST_DAY) in got_daily
    problems = []
    for key, want in daily.items():
        for column, value in want.items():
            if not _close(got_daily[key][column], value):
                problems.append(f"{key} {column}: dbt {got_daily[key][column]!r}, "
                                f"expected {value!r}")
    assert not problems, "\n".join(problems[:20])
    assert {r["spending_version"] for r in got_daily.values()} == {1}

    got_currency = {(r["user_id"], r["as_of_date"], r["currency"]): r for r in
                    _query(settings, f"select * from analytics_features.{BY_CURRENCY}")}
    assert set(got_currency) == set(by_currency)
    problems = []
    for key, want in by_currency.items():
        for column, value in want.items():
            if not _close(got_currency[key][column], value):
                problems.append(f"{key} {column}: dbt {got_currency[key][column]!r}, "
                                f"expected {value!r}")
    assert not problems, "\n".join(problems[:20])
    # The retried settlement's other amount and the too-late one never count anywhere.
    amounts = {round(r["largest_purchase_30d"] or 0, 2) for r in got_currency.values()}
    assert 9_999.0 not in amounts and 777.0 not in amounts
    # Something non-trivial was checked: several currencies and declines.
    assert {c for _, _, c in got_currency} == {"USD", "EUR", "JPY"}
    assert any(r["declined_count_7d"] > 0 for r in got_daily.values())

    got_reason = {(r["user_id"], r["as_of_date"], r["decline_reason"]):
                  {k: r[k] for k in ("declined_count_1d", "declined_count_7d")}
                  for r in _query(settings, f"select * from analytics_features.{BY_REASON}")}
    assert got_reason == by_reason
    assert {reason for _, _, reason in got_reason} == {"INSUFFICIENT_FUNDS", "SUSPECTED_FRAUD"}


def test_marts_on_snowflake_dialect_via_fakesnow(history_lake, fakesnow_server):
    """The same models through the Snowflake adapter (parse_json paths, lateral flatten) on
    fakesnow, over a few history rows copied from the lake."""
    settings, records, _ = history_lake
    database = fakesnow_server.database
    copied = {}
    with fakesnow_server.connect() as con:
        cur = con.cursor()
        cur.execute(f"create database if not exists {database}")
        cur.execute(f"create schema if not exists {database}.features")
        for ref in ("spending.v1", "declines.v1"):
            (fs,) = load_compiled([ref])
            table = history.read(settings, fs, start=LAST_DAY, end=LAST_DAY)
            name = f"{database}.features.{fs.name}_v{fs.version}"
            features = [f.name for f in fs.features]
            cur.execute(f"create or replace table {name} (entity_id varchar, as_of_date date, "
                        f"as_of_ms number(38, 0), "
                        + "".join(f"{c} varchar, " for c in features)
                        + "computed_at timestamp_tz)")
            for row in table.to_pylist():
                values = [row["entity_id"], row["as_of_date"].isoformat(), row["as_of_ms"],
                          *(row[c] for c in features), row["computed_at"].isoformat()]
                cur.execute(f"insert into {name} values ({', '.join(['%s'] * len(values))})",
                            values)
            copied[ref] = table.num_rows
    result = run_dbt(["build", *FEATURE_MODELS, "--exclude-resource-type", "unit_test"],
                     target="snowflake", env_extra=fakesnow_server.dbt_env, settings=settings)
    assert result.success and not result.failed, result.summary()

    _, by_currency, _ = expected_daily(records, LAST_DAY, LAST_DAY)
    want = {(user, currency): row for (user, _, currency), row in by_currency.items()}
    with fakesnow_server.connect() as con:
        cur = con.cursor()
        cur.execute(f"select user_id, currency, settled_amount_30d, largest_purchase_30d "
                    f"from {database}.analytics_features.{BY_CURRENCY}")
        got = {(u, c): (s, m) for u, c, s, m in cur.fetchall()}
        cur.execute(f"select count(*) from {database}.analytics_features.{DAILY}")
        (daily_rows,) = cur.fetchone()
    assert daily_rows == copied["spending.v1"]
    assert set(got) == set(want) and want
    for key, (settled, largest) in got.items():
        assert _close(float(settled), want[key]["settled_amount_30d"]), key
        assert _close(None if largest is None else float(largest),
                      want[key]["largest_purchase_30d"]), key

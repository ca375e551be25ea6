"""FIELD_JSON (infra/flink-udf), the SQL job's field printer, on literal rows in a streaming
TableEnvironment: parts changed upstream arrive as retraction + new value, as in the job."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pyflink.table", reason="PyFlink lives in the Flink env "
                    "(tests/test_flink_env.py runs this module there)")

from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment  # noqa: E402

from tests.flink.java_functions import register_java_functions  # noqa: E402


@pytest.fixture(scope="module")
def t_env():
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", "1")
    register_java_functions(t_env)
    return t_env


def _fields(t_env, rows: list[tuple]) -> dict[str, dict]:
    """(field, part, value, newest) rows -> each field's last printed JSON, parsed. A part is
    folded with MAX upstream, so a greater value for a part updates it (a retraction, then
    the new value)."""
    table = t_env.from_elements(rows, DataTypes.ROW([
        DataTypes.FIELD("field", DataTypes.STRING()),
        DataTypes.FIELD("part", DataTypes.STRING()),
        DataTypes.FIELD("part_value", DataTypes.STRING()),
        DataTypes.FIELD("newest", DataTypes.INT())]))
    t_env.create_temporary_view("changes", table)
    sql = """SELECT field, FIELD_JSON(part, part_value, newest) FROM (
               SELECT field, part, MAX(part_value) AS part_value, MAX(newest) AS newest
               FROM changes GROUP BY field, part)
             GROUP BY field"""
    last: dict[str, dict] = {}
    try:
        with t_env.sql_query(sql).execute().collect() as results:
            for row in results:
                if row.get_row_kind().name in ("INSERT", "UPDATE_AFTER"):
                    last[row[0]] = json.loads(row[1])
    finally:
        t_env.drop_temporary_view("changes")
    return last


def test_a_changed_part_keeps_only_its_new_value_and_text_is_escaped(t_env):
    odd = 'x"\\\x1f\x1e\n'  # the job's separators are control characters
    got = _fields(t_env, [("tile", f"spend{odd}EUR", "1", 0), ("tile", "count", "5", 0),
                          ("tile", f"spend{odd}EUR", "3", 0), ("tile", "count", "7", 0)])
    assert got == {"tile": {f"spend{odd}EUR": "3", "count": "7"}}


def test_a_last_n_field_prints_its_newest_items_by_time_then_item(t_env):
    items = [("l", f"i{k}", f"[{ts},\"x\"]", 3)
             for k, ts in [(1, 500), (2, 900), (3, -20), (4, 900), (5, 700), (6, 10)]]
    # an update moves i6 from the oldest but one to the newest
    items += [("l", "i6", "[99999]", 3)]
    got = _fields(t_env, items)
    # newest three by time, ties by item descending: i6 (99999), i4 (900), i2 (900)
    assert got == {"l": {"i6": "[99999]", "i4": "[900,\"x\"]", "i2": "[900,\"x\"]"}}

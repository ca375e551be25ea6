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


def _folded(t_env, rows: list[tuple]) -> dict[tuple, dict]:
    """(entity, target, kind, name, part, op, num, txt) rows through FOLD_PARTS grouped by
    entity, as the job runs it -> each field's last written JSON, parsed. Every update row's
    fields are written, in order, as the job's writer does (retractions included)."""
    table = t_env.from_elements(rows, DataTypes.ROW([
        DataTypes.FIELD("entity_id", DataTypes.STRING()),
        DataTypes.FIELD("target", DataTypes.STRING()),
        DataTypes.FIELD("kind", DataTypes.STRING()),
        DataTypes.FIELD("name", DataTypes.STRING()),
        DataTypes.FIELD("part", DataTypes.STRING()),
        DataTypes.FIELD("op", DataTypes.STRING()),
        DataTypes.FIELD("num", DataTypes.DOUBLE()),
        DataTypes.FIELD("txt", DataTypes.STRING())]))
    t_env.create_temporary_view("parts", table)
    sql = """SELECT c.target, entity_id, c.kind, c.name, c.payload
             FROM (SELECT entity_id, FOLD_PARTS(target, kind, name, part, op, num, txt,
                                                    86400000) AS changed
                   FROM parts GROUP BY entity_id)
             CROSS JOIN UNNEST(changed) AS c(target, kind, name, payload)"""
    written: dict[tuple, dict] = {}
    try:
        with t_env.sql_query(sql).execute().collect() as results:
            for row in results:
                written[(row[0], row[1], row[2], row[3])] = json.loads(row[4])
    finally:
        t_env.drop_temporary_view("parts")
    return written


def test_fold_parts_folds_each_op_and_writes_each_changed_field_whole(t_env):
    tile, late = ("s.v1", "t", "300000:7"), ("s.v1", "t", "300000:6")
    rows = [("u1", *tile, "n", "count", 1.0, None), ("u1", *tile, "n", "count", 1.0, None),
            ("u1", *tile, "amt\x1fEUR", "sum", 2.5, None),
            ("u1", *tile, "amt\x1fEUR", "sum", 0.25, None),
            ("u1", *tile, "big", "max", 3.0, None), ("u1", *tile, "big", "max", 1.0, None),
            ("u1", *tile, "small", "min", 3.0, None), ("u1", *tile, "small", "min", -1e10, None),
            ("u1", *tile, "avg", "avg", 1.0, None), ("u1", *tile, "avg", "avg", 2.0, None),
            ("u1", *tile, "m\x1d42", "exists", None, None),
            ("u1", *tile, "m\x1d42", "exists", None, None),
            ("u2", *tile, "n", "count", 1.0, None),
            # a later tile of u1 changes after the first: both stay whole and current
            ("u1", *late, "n", "count", 1.0, None),
            # ordered picks: the greatest text by code point (U+10000 > U+FFFF)
            ("u1", "s.v1", "v", "flags", "A", "max_text", None, "1\ufffd"),
            ("u1", "s.v1", "v", "flags", "A", "max_text", None, "1\U00010000"),
            ("u1", "s.v1", "v", "flags", "A", "max_text", None, "0zzz"),
            ("u1", "s.v1", "v", "flags", "B", "max_text", None, "x\"\\"),
            ("u1", "tx", "c", "", "", "max_text", None, "002"),
            ("u1", "tx", "c", "", "", "max_text", None, "001")]
    got = _folded(t_env, rows)
    assert got == {
        ("s.v1", "u1", "t", "300000:7"): {"n": "2", "amt\x1fEUR": "2.75", "big": "3.0",
                                          "small": "-1.0E10", "avg": "[3.0,2]",
                                          "m\x1d42": "1"},
        ("s.v1", "u2", "t", "300000:7"): {"n": "1"},
        ("s.v1", "u1", "t", "300000:6"): {"n": "1"},
        ("s.v1", "u1", "v", "flags"): {"A": "1\U00010000", "B": "x\"\\"},
        ("tx", "u1", "c", ""): {"": "002"}}

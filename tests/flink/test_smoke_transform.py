"""The smoke job's transform on literal rows, in batch mode (no cluster, no connectors)."""

from __future__ import annotations

from datetime import datetime

import pytest

# pyflink.table, not pyflink: Flink leaves a /tmp/pyflink folder that passes for a namespace
# package when the working directory is /tmp.
pytest.importorskip("pyflink.table", reason="PyFlink lives in the Flink env "
                    "(infra/envs/flink/.venv); tests/test_flink_env.py runs these tests there")

from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment  # noqa: E402

from flink_jobs.smoke import build  # noqa: E402

EVENTS = DataTypes.ROW([
    DataTypes.FIELD("event_id", DataTypes.STRING()),
    DataTypes.FIELD("event_type", DataTypes.STRING()),
    DataTypes.FIELD("event_time", DataTypes.TIMESTAMP(3)),
])


def at(second: float) -> datetime:
    return datetime(2024, 1, 1, 12, 0, int(second), int(second % 1 * 1_000_000))


@pytest.fixture(scope="module")
def t_env():
    return TableEnvironment.create(EnvironmentSettings.in_batch_mode())


def test_counts_per_type_in_tumbling_windows(t_env):
    rows = [
        ("e1", "APP_OPEN", at(0)),       # window [0, 10): first instant included
        ("e2", "APP_OPEN", at(9.999)),   # last millisecond of [0, 10)
        ("e3", "SEARCH", at(5)),
        ("e4", "APP_OPEN", at(10)),      # window [10, 20): the end is exclusive
        ("e5", "SEARCH", at(19)),
        ("e6", "SEARCH", at(19.5)),
    ]
    result = build(t_env, t_env.from_elements(rows, EVENTS))
    with result.execute().collect() as results:
        got = sorted((row[0].second, row[1].second, row[2], row[3]) for row in results)
    assert got == [
        (0, 10, "APP_OPEN", 2),
        (0, 10, "SEARCH", 1),
        (10, 20, "APP_OPEN", 1),
        (10, 20, "SEARCH", 2),
    ]


def test_output_schema(t_env):
    result = build(t_env, t_env.from_elements([("e1", "APP_OPEN", at(1))], EVENTS))
    assert result.get_schema().get_field_names() == [
        "window_start", "window_end", "event_type", "events"]

"""The feature_drift DAG in Airflow: a day with a shifted feature emits the ``feature_drift``
asset event naming it, and queues a run of the DAG scheduled on that asset; a day without
drift emits nothing. Real Airflow (``airflow dags test`` on its own SQLite home), real lake.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from mercury.config import REPO_ROOT, load_settings
from mercury.stack.airflow_standalone import airflow_binary, airflow_env
from mercury.stack.base import StackError
from tests.drift_fixtures import MODEL, make_world

CONSUMER = "retrain_on_feature_drift"


def test_the_signal_step_and_the_day_rule():
    """Cheap checks of the DAG's glue: no drift, no signal; a daily run measures yesterday."""
    from datetime import UTC, datetime

    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    try:
        from mercury_airflow.tasks.feature_drift import day_range, retraining_signal
    finally:
        sys.path.remove(str(REPO_ROOT / "plugins"))
    assert retraining_signal({"day": "2026-12-02", "drifted": {}}) is None
    assert retraining_signal({"day": "2026-12-02", "drifted": {"m": ["s.v1:f"]}}) == \
        {"day": "2026-12-02", "drifted": {"m": ["s.v1:f"]}}
    run_after = datetime(2026, 12, 3, 2, 30, tzinfo=UTC)
    assert day_range(None, run_after) == (datetime(2026, 12, 2, tzinfo=UTC),
                                          datetime(2026, 12, 3, tzinfo=UTC))
    assert day_range("2026-11-30", run_after)[0] == datetime(2026, 11, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="day: '30/11' is not a date"):
        day_range("30/11", run_after)


@pytest.mark.slow
def test_drift_emits_the_asset_event_and_queues_its_consumer(tmp_path, airflow_home,
                                                             warm_airflow):
    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    config = make_world(tmp_path)
    env = {**os.environ, "MERCURY_CONFIG": str(config)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(config))
        settings = load_settings()
    # The consumer must be known and unpaused to be queued: `dags test` without -f serialises
    # every DAG of the folder (the consumer too), unpaused at creation here; no
    # `dags reserialize` and `dags unpause` (one Airflow start each).
    env |= airflow_env(settings, home=airflow_home(tmp_path / "airflow")) | {
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False"}

    # One Airflow process for both runs: Airflow and the drift task's imports load once.
    warm = warm_airflow(binary, env, cwd=tmp_path, log_dir=tmp_path)

    def airflow(*args: str) -> str:
        run = warm.run(*args, timeout=400)
        assert run.returncode == 0, run.stdout[-5000:]
        return run.stdout

    database = sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db")

    def events() -> list[dict]:
        rows = database.execute("SELECT e.extra FROM asset_event e JOIN asset a "
                                "ON a.id = e.asset_id WHERE a.name = 'feature_drift'")
        return [json.loads(extra) for (extra,) in rows]

    def queued() -> list[str]:
        return [dag for (dag,) in database.execute(
            "SELECT target_dag_id FROM asset_dag_run_queue")]

    quiet = airflow("dags", "test", "feature_drift", "-c", '{"day": "2026-12-01"}')
    assert "no feature drifted" in quiet and "state=success" in quiet, quiet[-5000:]
    assert events() == [] and queued() == []

    loud = airflow("dags", "test", "feature_drift", "-c", '{"day": "2026-12-02"}')
    assert "state=success" in loud, loud[-5000:]
    assert events() == [{"day": "2026-12-02",
                         "drifted": {MODEL: ["declines.v1:approved_count.1d"]}}]
    assert queued() == [CONSUMER]
    report = settings.data_dir / "drift" / MODEL / "2026-12-02.json"
    assert json.loads(report.read_text())["drifted"] == ["declines.v1:approved_count.1d"]

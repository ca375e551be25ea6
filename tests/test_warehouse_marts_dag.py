"""The warehouse_marts DAG: dbt's lake and feature marts through astronomer-cosmos.

- The rendered graph, held to the dbt project: one ``run`` task per model of the selection
  (the ``.sql`` files of its folders), a ``test`` task after each, the dependencies of the
  models' refs, the lake's freshness gate before the lake's staging model.
- The committed ``dbt ls`` file it renders from is what dbt lists now, and a stale one is
  refused naming the node.
- The feature versions follow the online store's active pointers (in-memory store), and a
  task's dbt command gets the config's target, bindings and those versions.
- The gate's command on a lake 10 min, 5 h and 7 h behind: pass, warn, fail.
- One ``airflow dags test`` on DuckDB over a private lake and a private Redis (dbt in the
  task's process: per task, the task's start, a partial parse and the SQL; docs/PERFORMANCE.md,
  "Test suite time"): spending v2 promoted while the project's var still says 1, the lake 7 h
  stale. The gate fails the run and the lake model never builds; the feature marts build,
  from spending_v2's table.
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from mercury.config import REPO_ROOT, Settings, load_settings
from mercury.warehouse import marts
from mercury.warehouse.dbt_runner import DBT_PROJECT_DIR
from tests.airflow_fixtures import dags_test
from tests.conftest import write_config

MODEL_FOLDERS = ("staging/lake", "staging/features", "marts/features")
FRESHNESS_TASK = "dbt.lake_transactions.source"
HOUR_MS = 3_600_000


def _steps():
    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    try:
        from mercury_airflow.tasks import warehouse_marts
    finally:
        sys.path.remove(str(REPO_ROOT / "plugins"))
    return warehouse_marts


def _project_models() -> set[str]:
    """The models of the selection, read from the project's files (not from dbt or cosmos)."""
    return {p.stem for folder in MODEL_FOLDERS
            for p in (DBT_PROJECT_DIR / "models" / folder).glob("*.sql")}


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    from tests.airflow_fixtures import parsed_dags

    with parsed_dags(tmp_path_factory.mktemp("airflow_home"),
                     REPO_ROOT / "dags" / "warehouse_marts.py") as bag:
        assert bag.import_errors == {}
        return bag.dags["warehouse_marts"]


def test_one_run_and_one_test_task_per_model_of_the_project(dag):
    models = _project_models()
    assert {"stg_lake__transactions", "stg_features__spending_history",
            "fct_user_daily_spending"} <= models
    runs = {t.task_id for t in dag.tasks if t.task_id.endswith(".run")}
    assert runs == {f"dbt.{m}.run" for m in models}
    for model in models:
        test = dag.get_task(f"dbt.{model}.test")
        assert test.upstream_task_ids == {f"dbt.{model}.run"}
        assert test.select == model  # its data tests and unit tests
    # A test on two models runs after both.
    (both,) = [t for t in dag.tasks if t.task_id.startswith("dbt.relationships_")]
    assert both.upstream_task_ids == {"dbt.fct_user_daily_spending.test",
                                      "dbt.fct_user_daily_spending_by_currency.test"}
    # Nothing else: the versions task, the freshness gate and the source's own tests.
    assert {t.task_id for t in dag.tasks} == runs | {f"dbt.{m}.test" for m in models} | {
        both.task_id, "feature_versions", FRESHNESS_TASK, "dbt.lake_transactions.test"}


def test_models_wait_for_their_parents_and_the_lake_for_its_freshness_gate(dag):
    for node in marts.load_nodes().values():
        if node["resource_type"] != "model":
            continue
        want = set()
        for parent in node["depends_on"]["nodes"]:
            kind, _, *rest = parent.split(".")
            if kind == "model":
                want.add(f"dbt.{rest[-1]}.test")
            elif parent == "source.mercury.lake.transactions":
                want.add("dbt.lake_transactions.test")
            else:  # the feature history: no freshness, no source test, no task
                want.add("feature_versions")
        assert dag.get_task(f"dbt.{node['name']}.run").upstream_task_ids == want, node["name"]
    gate = dag.get_task(FRESHNESS_TASK)
    assert type(gate).__name__ == "DbtSourceLocalOperator"
    # Every dbt task runs dbt in its own process (dbtRunner), not a `dbt` subprocess.
    assert {t.invocation_mode.value for t in dag.tasks if t.task_id.startswith("dbt.")} == {
        "dbt_runner"}
    assert gate.select == "source:lake.transactions"
    assert gate.upstream_task_ids == {"feature_versions"}
    assert dag.max_active_tasks == 1 and dag.max_active_runs == 1 and not dag.catchup


def test_the_dag_finds_the_project_where_mercury_keeps_it():
    steps = _steps()
    assert steps.DBT_PROJECT_DIR == DBT_PROJECT_DIR
    assert steps.NODES_FILE == marts.NODES_FILE
    assert steps.DBT_EXECUTABLE.is_file()


def test_nodes_file_is_what_dbt_lists_and_a_stale_one_is_refused(tmp_settings, tmp_path):
    lines = marts.NODES_FILE.read_text().splitlines()
    assert marts.check_nodes(tmp_settings) == len(lines)
    names = marts.rendered_names()
    assert set(names["model"]) == _project_models()
    assert set(names) == {"model", "test", "source"}
    dropped = json.loads(lines[0])["unique_id"]
    stale = tmp_path / "stale.jsonl"
    stale.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(marts.MartsError, match=f"new: {dropped}.*mercury warehouse nodes"):
        marts.check_nodes(tmp_settings, stale)


def test_mart_versions_follow_the_active_pointers():
    from mercury.config import MemoryStoreConfig
    from mercury.online.memory_store import MemoryOnlineStore

    sets = marts.mart_feature_sets()
    declared = marts.declared_histories()
    assert sets == ("declines", "spending")
    assert declared == {"spending": (1, 2), "declines": (1,)}
    store = MemoryOnlineStore(MemoryStoreConfig())
    with pytest.raises(marts.MartsError, match="declines: no version is active.*"
                                               "spending: no version is active"):
        marts.served_versions(store, sets, declared)
    store.promote("spending", 1)
    store.promote("declines", 1)
    assert marts.served_versions(store, sets, declared) == {"declines": 1, "spending": 1}
    store.promote("spending", 2)
    assert marts.served_versions(store, sets, declared) == {"declines": 1, "spending": 2}
    store.rollback("spending")
    assert marts.served_versions(store, sets, declared)["spending"] == 1
    store.promote("spending", 3)
    with pytest.raises(marts.MartsError, match=r"spending: v3 is active .* no source "
                                               r"features.spending_v3 \(declared: v1, v2\)"):
        marts.served_versions(store, sets, declared)
    assert marts.mart_vars({"spending": 2, "declines": 1}) == {
        "feature_history_versions": {"declines": 1, "spending": 2}}


class _TaskInstance:
    def __init__(self, xcoms: dict):
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str):
        return self.xcoms.get(task_ids)


@pytest.mark.parametrize("target", ["local", "snowflake"])
def test_each_dbt_task_is_bound_to_the_config_and_the_runs_versions(dag, tmp_path,
                                                                    monkeypatch, target):
    config = write_config(tmp_path, warehouse={"dbt_target": target})
    monkeypatch.setenv("MERCURY_CONFIG", str(config))
    settings = load_settings()
    steps = _steps()
    task = copy.deepcopy(dag.get_task("dbt.stg_features__spending_history.run"))
    context = {"ti": _TaskInstance({"feature_versions": {"spending": 2, "declines": 1}})}
    steps.bind_dbt(context, task)

    assert task.profile_config.target_name == target
    assert task.profile_config.profiles_yml_filepath == DBT_PROJECT_DIR / "profiles.yml"
    assert task.env["DBT_LOG_PATH"] == str(Path(settings.data_dir) / "dbt" / target / "logs")
    assert "DBT_TARGET_PATH" not in task.env  # each task keeps cosmos's own target folder
    if target == "local":
        assert task.env["MERCURY_DUCKDB_PATH"] == str(settings.warehouse.duckdb_path)
        assert task.env["MERCURY_LAKE_WAREHOUSE"] == Path(settings.lake.warehouse).as_uri()
    else:
        assert "MERCURY_DUCKDB_PATH" not in task.env
    flags = task.add_global_flags()
    import yaml

    assert yaml.safe_load(flags[flags.index("--vars") + 1]) == {
        "feature_history_versions": {"declines": 1, "spending": 2}}
    with pytest.raises(RuntimeError, match="no feature versions"):
        steps.bind_dbt({"ti": _TaskInstance({})}, copy.deepcopy(task))


# --- airflow dags test on DuckDB ------------------------------------------------------------


@dataclass
class World:
    settings: Settings
    env: dict[str, str]
    binary: Path
    folder: Path

    def airflow(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.folder)

    def run(self) -> tuple[str, dict[str, str]]:
        """One `airflow dags test`: its output and the state of each task of that run."""
        before = self._run_ids()
        started = time.monotonic()
        run = self.airflow(*dags_test("warehouse_marts"))
        output = run.stdout + run.stderr
        runs = sorted(self.folder.glob("run_*.log"))
        (self.folder / f"run_{len(runs) + 1}.log").write_text(output)
        print(f"airflow dags test warehouse_marts: {time.monotonic() - started:.0f} s")
        (run_id,) = self._run_ids() - before
        return output, dict(self._metadata(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            "warehouse_marts", run_id))

    def _run_ids(self) -> set[str]:
        return {run_id for (run_id,) in self._metadata(
            "SELECT run_id FROM dag_run WHERE dag_id = ?", "warehouse_marts")}

    def _metadata(self, sql: str, *params: str) -> list[tuple]:
        """Rows of this world's Airflow database, read directly: each `airflow dags list-runs`
        or `tasks states-for-dag-run` would start Airflow again (~10 s here)."""
        database = sqlite3.connect(Path(self.env["AIRFLOW_HOME"]) / "airflow.db")
        try:
            return database.execute(sql, params).fetchall()
        finally:
            database.close()

    def promote(self, set_name: str, version: int) -> None:
        from mercury.online.factory import open_store

        store = open_store(self.settings)
        try:
            store.promote(set_name, version)
        finally:
            store.close()

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.settings.warehouse.duckdb_path), read_only=True) as con:
            return con.execute(sql).fetchall()


def _arrivals(now_ms: int, age_ms: int, first: int, count: int) -> list[dict]:
    from tests.lake_fixtures import transaction

    return [transaction(first + i, event_ts=now_ms - age_ms - 1_000, ingest_ts=now_ms - age_ms)
            for i in range(count)]


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_home):
    from mercury.lake import tables
    from mercury.stack.airflow_standalone import airflow_binary, airflow_env
    from mercury.stack.base import StackError
    from tests.feature_history_fixtures import history_stream
    from tests.serving_fixtures import PrivateRedis
    from tests.test_feature_marts import write_history

    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("warehouse_marts")
    redis = PrivateRedis(folder)
    redis.start()
    try:
        config = write_config(folder, online_store={"port": redis.port})
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MERCURY_CONFIG", str(config))
            settings = load_settings()
        first_day = date(2024, 3, 4)
        records = history_stream(first_day, 3, per_day=8)
        for ref in ("spending.v1", "spending.v2", "declines.v1"):
            write_history(settings, ref, records, first_day, first_day + timedelta(days=2))
        # The lake's newest arrival 7 h ago: past the source's error_after (6 h).
        now_ms = int(time.time() * 1000)
        tables.upsert(settings, "transactions", _arrivals(now_ms, 7 * HOUR_MS, 0, 3))
        env = {**os.environ, **airflow_env(settings, home=airflow_home(folder / "airflow")),
               "MERCURY_CONFIG": str(config),
               # The failing gate's one retry waits Airflow's default delay: 1 s here.
               "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1"}
        world = World(settings, env, binary, folder)
        world.promote("spending", 1)
        world.promote("declines", 1)
        yield world
    finally:
        redis.stop()


@pytest.mark.slow
def test_stale_lake_fails_the_run_at_the_gate_and_the_marts_follow_the_pointer(world):
    """Spending v2 is active while the project's var still says 1: the marts read v2."""
    world.promote("spending", 2)  # what feature_backfill's promote does; no var is edited
    output, states = world.run()
    assert "state=failed" in output
    assert states[FRESHNESS_TASK] == "failed", output[-6000:]
    # Failed after its retry: the gate ran twice.
    assert output.count(f"starting task_id={FRESHNESS_TASK} ") == 2, output[-6000:]
    assert "ERROR STALE freshness of lake.transactions" in output
    lake = {"dbt.lake_transactions.test", "dbt.stg_lake__transactions.run",
            "dbt.stg_lake__transactions.test"}
    assert {t: states[t] for t in lake} == dict.fromkeys(lake, "upstream_failed")
    # The feature marts do not read the lake: they built and passed their tests.
    built = {t: s for t, s in states.items() if t not in lake | {FRESHNESS_TASK}}
    assert len(built) == 2 * (len(_project_models()) - 1) + 2  # + relationships, versions
    assert set(built.values()) == {"success"}, built
    assert "marts read the active versions: declines v1, spending v2" in output
    # dbt unit tests have no task of their own: the model's test task runs them.
    assert "PASS fct_user_daily_spending::fct_user_daily_spending_flattens_the_history" in output
    assert world.query("select distinct spending_version, declines_version "
                       "from analytics_features.fct_user_daily_spending") == [(2, 1)]
    # Only v2 has 90 d windows: staging read spending_v2's table, not only the var's number.
    (with_90d, rows), = world.query(
        "select count(*) filter (where settled_amount like '%\"90d\"%'), count(*) "
        "from analytics.stg_features__spending_history")
    assert rows > 0 and with_90d == rows


@pytest.mark.parametrize(("age_ms", "status"), [(10 * 60_000, "pass"),
                                               (5 * HOUR_MS, "warn"),
                                               (7 * HOUR_MS, "error")])
def test_the_gates_command_on_a_lake_whose_newest_arrival_is(tmp_settings, age_ms, status):
    """What the gate task runs, `dbt source freshness --select source:lake.transactions`:
    warn after 1 h (the task passes, dbt logs a warning), fail after 6 h."""
    from mercury.lake import tables
    from mercury.warehouse.dbt_runner import run_dbt

    tables.upsert(tmp_settings, "transactions", _arrivals(int(time.time() * 1000), age_ms, 0, 2))
    result = run_dbt(["source", "freshness", "--select", "source:lake.transactions"],
                     settings=tmp_settings, check=False)
    report = json.loads((result.target_path / "sources.json").read_text())
    assert [(r["unique_id"], r["status"]) for r in report["results"]] == [
        ("source.mercury.lake.transactions", status)], result.output[-3000:]
    assert result.success is (status != "error")

"""DAGs: they import, follow the house policy, and flink_smoke really runs on the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mercury.config import REPO_ROOT, load_settings
from mercury.stack.airflow_standalone import airflow_binary, airflow_env
from mercury.stack.base import StackError
from tests.airflow_fixtures import dags_test, parsed_dags

DAGS_FOLDER = REPO_ROOT / "dags"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    with parsed_dags(tmp_path_factory.mktemp("airflow_home"), DAGS_FOLDER) as bag:
        yield bag


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"flink_smoke", "streaming_features", "streaming_features_health",
            "dlq_replay", "feature_backfill"} <= set(dagbag.dags)


def test_dag_policy(dagbag):
    problems = []
    for dag_id, dag in dagbag.dags.items():
        if not dag.tags:
            problems.append(f"{dag_id}: no tags")
        # Catch-up runs one DAG run per missed interval: a DAG must opt in explicitly.
        if dag.catchup and "catchup" not in dag.tags:
            problems.append(f"{dag_id}: catchup=True without the 'catchup' tag")
        for task in dag.tasks:
            if task.owner in ("", "airflow"):
                problems.append(f"{dag_id}.{task.task_id}: owner {task.owner!r}")
            if task.retries < 1:
                problems.append(f"{dag_id}.{task.task_id}: retries={task.retries}")
    assert not problems, "\n".join(problems)


def test_every_task_pages_when_it_fails_and_counts_its_outcome(dagbag):
    """The cluster policy (plugins/airflow_local_settings.py) gives every task of every DAG
    the Alertmanager page and the outcome counters, keeping a callback a DAG set itself."""
    from mercury_airflow.alerting import page_on_failure
    from mercury_airflow.outcomes import count_failure, count_retry, count_success

    assert dagbag.dags
    unpaged = [f"{dag_id}.{task.task_id}" for dag_id, dag in dagbag.dags.items()
               for task in dag.tasks
               if page_on_failure not in (task.on_failure_callback or [])
               or count_failure not in (task.on_failure_callback or [])
               or count_retry not in (task.on_retry_callback or [])
               or count_success not in (task.on_success_callback or [])]
    assert not unpaged, unpaged


def test_streaming_features_actions_pick_their_tasks(dagbag):
    """deploy skips the stop, stop skips the deploy (and what follows it), redeploy runs both
    in order; the health DAG watches the same job every five minutes."""
    from airflow.sdk import TriggerRule

    dag = dagbag.dags["streaming_features"]
    choose = dag.get_task("choose")
    picked = {action: choose.python_callable(params={"action": action})
              for action in ("deploy", "stop", "redeploy")}
    assert picked == {"deploy": ["deploy"], "stop": ["stop"], "redeploy": ["stop", "deploy"]}
    assert dag.params["action"] == "deploy"
    assert choose.downstream_task_ids == {"stop", "deploy"}
    deploy = dag.get_task("deploy")
    assert deploy.upstream_task_ids == {"choose", "stop", "job_args"}
    assert deploy.trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    assert dag.get_task("wait_until_running").upstream_task_ids == {"deploy"}
    assert dag.get_task("health").upstream_task_ids == {"wait_until_running"}
    watch = dagbag.dags["streaming_features_health"]
    assert watch.schedule == "*/5 * * * *"
    assert watch.get_task("health").job_name == deploy.job_name == "online-features"


def test_feature_backfill_promotes_only_after_every_gate(dagbag):
    """One chain, every task all_success: a failed gate leaves promote upstream_failed (the
    runs themselves: tests/test_feature_backfill_dag.py)."""
    from airflow.sdk import TriggerRule

    dag = dagbag.dags["feature_backfill"]
    chain = ["backfill_history", "check_history", "warm_start_online", "consistency_gate",
             "shadow_compare", "promote", "retire_previous"]
    for before, after in zip(chain, chain[1:], strict=False):
        assert dag.get_task(after).upstream_task_ids == {"plan", before}
    assert {t.trigger_rule for t in dag.tasks} == {TriggerRule.ALL_SUCCESS}
    assert dag.schedule is None and dag.max_active_runs == 1
    assert {"feature_set", "version", "start", "end", "promote"} <= set(dag.params)
    assert dag.params["promote"] is True


@pytest.mark.stack
@pytest.mark.slow
def test_flink_smoke_dag_runs_the_job(flink_rest, tmp_path, airflow_home):
    """`airflow dags test flink_smoke` submits the smoke job, which reaches RUNNING and is
    cancelled at the end; checked on the cluster, not only in Airflow's log."""
    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    # A fresh AIRFLOW_HOME: its own SQLite database, nothing left from earlier runs.
    env = {**os.environ, **airflow_env(load_settings("local"),
                                       home=airflow_home(tmp_path / "airflow"))}
    before = {job.job_id for job in flink_rest.jobs()}

    def airflow(*args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)

    run = airflow(*dags_test("flink_smoke"), timeout=400)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    assert "state=success" in output, output[-5000:]

    new = [job for job in flink_rest.jobs() if job.job_id not in before]
    assert [job.name for job in new] == ["flink_smoke"], new
    details = flink_rest.job(new[0].job_id)
    assert details["timestamps"]["RUNNING"] > 0, "the job never reached RUNNING"
    assert details["state"] == "CANCELED"


@pytest.mark.slow
def test_dlq_replay_dag_replays_a_fixed_dead_letter(tmp_settings, tmp_path, airflow_home):
    """`airflow dags test dlq_replay`: a dead letter whose cause is fixed (its payload passes
    the current contract) is produced again to its stream by the replay task, once."""
    import orjson

    from mercury.contracts.validation import Verdict
    from mercury.eventlog import open_producer
    from mercury.eventlog.file_log import FileEventReader
    from mercury.quality.dead_letters import make_dead_letter
    from mercury.quality.replay_ledger import entries
    from tests.lake_fixtures import transaction

    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    # Dead-lettered when the code list lacked CHF, say; the fixed list has it.
    payload = orjson.dumps(transaction(1, currency="CHF"))
    letter = make_dead_letter("transactions", "transactions/part-old-00000001.jsonl:1", payload,
                              Verdict(False, rule="bad_currency", field="currency"), 0)
    with open_producer(tmp_settings, writer_id="loader") as producer:
        producer.send("transactions.dlq", orjson.dumps(letter))  # the file log carries JSON
    # MERCURY_CONFIG (set by tmp_settings) points the DAG's tasks at this test's folders.
    env = {**os.environ, **airflow_env(tmp_settings, home=airflow_home(tmp_path / "airflow"))}

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    run = airflow(*dags_test("dlq_replay", "-c", '{"stream": "transactions"}'))
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in output, output[-5000:]
    assert "dry run: transactions: read 1 dead letters, would replay 1" in output
    assert "transactions: read 1 dead letters, replayed 1," in output
    replayed = [m.value for m in FileEventReader(tmp_settings.event_log.root).read("transactions")]
    assert replayed == [payload]
    # Recorded in the shared store, where a retry on another worker would look.
    assert [entry["dlq_id"] for entry in entries(tmp_settings, "transactions")] == [
        letter["dlq_id"]]


def test_each_dag_file_parses_in_under_a_second(dagbag):
    """Parsing is cheap: module level only builds the DAG (the scheduler parses every file
    every few minutes, on every scheduler)."""
    durations = {stat.file: stat.duration.total_seconds() for stat in dagbag.dagbag_stats}
    assert len(durations) == len(list(DAGS_FOLDER.glob("*.py")))
    print("parse seconds per DAG file:", {Path(f).name: round(s, 3) for f, s in durations.items()})
    slow = {f: round(s, 3) for f, s in durations.items() if s >= 1.0}
    assert not slow, f"DAG files slower than 1 s to parse: {slow}"


def test_importing_a_dag_file_imports_no_mercury_module():
    """DAGs only wire: mercury (and Spark, GX, Redis behind it) is imported by the tasks when
    they run, never when the scheduler parses the file."""
    import ast

    probe = ("import importlib, sys\n"
             "sys.path[:0] = ['plugins']\n"
             "found = {}\n"
             f"for name in {sorted(p.stem for p in DAGS_FOLDER.glob('*.py'))!r}:\n"
             "    importlib.import_module('dags.' + name)\n"
             "    found[name] = sorted(m for m in sys.modules if m.split('.')[0] == 'mercury')\n"
             "print(found)\n")
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    found = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    print("mercury modules imported by each DAG file:", found)
    assert set(found) >= {"feature_backfill", "streaming_features", "dlq_replay"}
    assert all(modules == [] for modules in found.values()), found


def test_the_replay_form_lists_every_stream_with_dead_letters():
    """The dlq_replay form's list is a constant (no mercury at parse time), held here to the
    contracts' registry."""

    from mercury.contracts.registry import STREAMS

    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    try:
        from mercury_airflow.tasks.dlq_replay import REPLAYABLE
    finally:
        sys.path.remove(str(REPO_ROOT / "plugins"))
    assert list(REPLAYABLE) == sorted(s.name for s in STREAMS if s.dead_letter_stream)

"""warehouse_marts: the lake and feature marts, built by dbt through astronomer-cosmos, daily.

One Airflow task per dbt node, from ``dbt/cosmos/warehouse_marts.jsonl`` (``dbt ls`` of
``source:lake+ source:features+``, committed; ``mercury warehouse nodes`` rewrites it):

- ``feature_versions``: the active version of each feature set the marts read (the online
  store's pointers, moved by ``feature_backfill``'s promote); fixed for the whole run. No
  active version, or one whose history the dbt project does not declare, fails the run.
- ``dbt.transactions_source.source``: ``dbt source freshness`` of the lake's transactions,
  the gate: past its ``error_after`` (6 h of ``ingest_ts``) the task fails, so
  ``stg_lake__transactions`` never builds on a stale lake and the run fails;
  ``...transactions_source.test``: the source's tests.
- per model ``dbt.<model>.run`` then ``dbt.<model>.test`` (its data and unit tests); a test
  on two models (the relationships test) is a task of its own after both.

Every dbt task gets the config's bindings just before it runs (``bind_dbt``: target, the
``MERCURY_*`` env vars of ``mercury.warehouse.dbt_runner``, the run's feature versions as
the var ``feature_history_versions``). One task at a time: the local DuckDB file has one
writer. docs/BATCH.md, "The marts in Airflow".
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, SourceRenderingBehavior, TestBehavior
from mercury_airflow.tasks import settings
from mercury_airflow.tasks import warehouse_marts as steps

# The retry waits airflow.default_retry_delay_s (Airflow's [core] default_task_retry_delay), as
# in feature_backfill: one setting for the deployment, and a test of the failing gate need not
# sit out a fixed two minutes before the retry it asserts.
DEFAULT_ARGS = {"owner": "data-platform", "retries": 1}


@task(task_id=steps.VERSIONS_TASK)
def feature_versions() -> dict:
    """The active version of each feature set the marts read, fixed for this run."""
    return steps.feature_versions(settings())


with DAG(
    dag_id="warehouse_marts",
    description="dbt (cosmos): lake staging and the feature marts, after a source freshness gate",
    schedule=timedelta(days=1),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    tags=["dbt", "warehouse", "features", "lake"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
):
    dbt = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(dbt_project_path=steps.DBT_PROJECT_DIR,
                                     install_dbt_deps=False),
        # The target here is a placeholder: bind_dbt sets the config's target in each task.
        profile_config=ProfileConfig(profile_name=steps.PROFILE_NAME, target_name="local",
                                     profiles_yml_filepath=steps.PROFILES_YML),
        # dbt in the task's own process (dbtRunner), not a `dbt` subprocess per task: a
        # subprocess pays Python's start and dbt's imports (~7 s of CPU here) on every task.
        # The worker's environment has dbt and its adapters (pyproject.toml), as before.
        execution_config=ExecutionConfig(dbt_executable_path=steps.DBT_EXECUTABLE,
                                         invocation_mode=InvocationMode.DBT_RUNNER),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_LS_FILE, dbt_ls_path=steps.NODES_FILE,
            test_behavior=TestBehavior.AFTER_EACH,
            source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS,
            should_detach_multiple_parents_tests=True, emit_datasets=False),
        operator_args={"interceptors": [steps.bind_dbt]},
        default_args=DEFAULT_ARGS,
    )
    feature_versions() >> dbt

"""streaming_features: deploy, stop or redeploy the online-features Flink job, and watch it.

Two DAGs over one deployment (``mercury.ops.deployments``, job name ``online-features``):

- ``streaming_features`` (triggered by hand): param ``action``
  - ``deploy``: submit the job, restoring the last savepoint or retained checkpoint (a retry,
    or a deploy while the same job already runs, keeps the running job);
  - ``stop``: stop it with a savepoint, recorded for the next deploy;
  - ``redeploy``: both, e.g. to change the feature sets; the new job restores the savepoint
    (set ``allow_non_restored_state`` when feature sets were removed).
  After a deploy: wait until all tasks run, then check health (first checkpoint within 60 s).
- ``streaming_features_health`` (every 5 minutes): fails, naming the problem, when the job is
  not RUNNING, a task is not running, or its last checkpoint is older than
  ``MAX_CHECKPOINT_AGE_S``. Pause it while the job is stopped on purpose.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, TriggerRule, task
from mercury_airflow.operators.streaming import (
    DeployStreamingJobOperator,
    StopStreamingJobOperator,
    StreamingJobHealthOperator,
    WaitStreamingJobRunningOperator,
)

JOB_NAME = "online-features"
JOB_FILE = Path(__file__).parents[1] / "flink_jobs" / "online_features.py"
# The job checkpoints every few seconds: two minutes without one means it is stuck.
MAX_CHECKPOINT_AGE_S = 120
# Which tasks each action runs (the branch follows these task ids).
ACTIONS = {"deploy": ["deploy"], "stop": ["stop"], "redeploy": ["stop", "deploy"]}
DEFAULT_ARGS = {"owner": "data-platform", "retries": 1, "retry_delay": timedelta(seconds=30)}


@task.branch
def choose(params=None) -> list[str]:
    """The tasks the chosen action runs."""
    return ACTIONS[params["action"]]


@task
def job_args(params=None) -> list[str]:
    """The job's arguments: this worker's settings file, the engine, and the chosen feature
    sets and parallelism when given (the job's defaults otherwise)."""
    from mercury.config import config_path

    args = ["--config", str(config_path().resolve()), "--engine", params["engine"]]
    if params["feature_sets"]:
        args += ["--feature-sets", params["feature_sets"]]
    if params["parallelism"]:
        args += ["--parallelism", str(params["parallelism"])]
    return args


with DAG(
    dag_id="streaming_features",
    description="Deploy, stop or redeploy the online-features Flink job (savepoint restore)",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    # Params keep their types in templates (a boolean stays a boolean, not "False").
    render_template_as_native_obj=True,
    tags=["flink", "streaming", "features", "platform"],
    default_args=DEFAULT_ARGS,
    params={
        "action": Param("deploy", enum=sorted(ACTIONS)),
        "feature_sets": Param("", type="string",
                              description="comma-separated, e.g. spending.v1,declines.v1; "
                                          "empty: the job's default"),
        "parallelism": Param(None, type=["null", "integer"], minimum=1),
        "engine": Param("sql", enum=["sql", "python"],
                        description="sql: the Flink SQL job; python: the per-event Python "
                                    "operators. A redeploy onto the other engine cannot "
                                    "restore the old state: stop, then deploy with "
                                    "allow_non_restored_state, then warm start or replay"),
        "allow_non_restored_state": Param(False, type="boolean"),
        "max_checkpoint_age_s": Param(MAX_CHECKPOINT_AGE_S, type="integer", minimum=5),
    },
    doc_md=__doc__,
):
    stop = StopStreamingJobOperator(task_id="stop", job_name=JOB_NAME)
    deploy = DeployStreamingJobOperator(
        task_id="deploy", job_name=JOB_NAME, py_file=str(JOB_FILE), job_args=job_args(),
        allow_non_restored_state="{{ params.allow_non_restored_state }}",
        # Runs after a successful stop (redeploy) or with the stop skipped (deploy).
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    running = WaitStreamingJobRunningOperator(task_id="wait_until_running",
                                              job_id=deploy.output, timeout_s=180)
    healthy = StreamingJobHealthOperator(
        task_id="health", job_name=JOB_NAME,
        max_checkpoint_age_s="{{ params.max_checkpoint_age_s }}", wait_for_checkpoint_s=60)
    choose() >> [stop, deploy]
    stop >> deploy >> running >> healthy


with DAG(
    dag_id="streaming_features_health",
    description="Every 5 minutes: the online-features job runs and checkpoints",
    schedule="*/5 * * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["flink", "streaming", "features", "monitoring"],
    default_args={**DEFAULT_ARGS, "execution_timeout": timedelta(minutes=2)},
    doc_md=__doc__,
):
    StreamingJobHealthOperator(task_id="health", job_name=JOB_NAME,
                               max_checkpoint_age_s=MAX_CHECKPOINT_AGE_S)

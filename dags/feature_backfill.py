"""feature_backfill: backfill a feature-set version's history, gate it, and promote it.

Triggered by hand (Airflow UI "Trigger DAG w/ config", or ``airflow dags trigger -c``) with:

- ``feature_set`` (name, e.g. ``spending``) and ``version`` (int): a compiled spec
  ``mercury/features/compiled/<name>.v<version>.json`` must exist;
- ``start``, ``end`` (dates, inclusive): the history days to compute, UTC; days that have
  ended (the end is before today);
- ``promote`` (default true): flip the active pointer when every gate passes; off, the run
  stops with the version ready (history, warm online keys) but not serving;
- ``cut_ms`` (optional): the warm-start cut, epoch ms; default the newest arrival in the lake.

Tasks, in order (each one's work is in ``mercury_airflow.tasks.feature_backfill``):

``plan`` -> ``backfill_history`` (Spark) -> ``check_history`` (Great Expectations on the
history rows of [start, end]) -> ``warm_start_online`` (Spark, online keys at the cut) ->
``consistency_gate`` (online hashes vs Spark recompute, ``offline.consistency_min_share`` per
feature) -> ``shadow_compare`` (against the active version; fails only when a feature both
versions define identically differs) -> ``promote`` -> ``retire_previous`` (the old version's
keys expire after ``offline.retire_after_s``: the rollback window).

Every task runs only if all before it succeeded (the default ``all_success`` trigger rule,
kept on purpose): a failed gate fails the run, and ``promote`` ends ``upstream_failed``, so the
pointer never moves. Safe to retry: the plan (cut, previous version) is fixed once and passed
by XCom, with the compiled definition itself (and its digest), so every step runs the
definition the run started with; each step overwrites what it writes or only reads. One run
at a time, so two runs never race on one pointer.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task
from mercury_airflow.tasks import feature_backfill as steps
from mercury_airflow.tasks import settings

# The retry waits airflow.default_retry_delay_s (Airflow's [core] default_task_retry_delay).
DEFAULT_ARGS = {"owner": "data-platform", "retries": 1}


@task
def plan(params=None, dag_run=None) -> dict:
    """Validate the params; pin the definition, the cut and the previously active version."""
    return steps.plan_backfill(settings(), params, today=dag_run.run_after.date())


@task
def backfill_history(run: dict) -> dict:
    """history.backfill of [start, end] in Spark (only days that can have changed)."""
    return steps.backfill_history(settings(), run)


@task
def check_history(run: dict) -> dict:
    """Great Expectations checkpoint on the history rows of [start, end]."""
    return steps.check_history_range(settings(), run)


@task
def warm_start_online(run: dict) -> dict:
    """The version's online keys and bootstrap state from lake events up to the cut."""
    return steps.warm_start_online(settings(), run)


@task
def consistency_gate(run: dict) -> dict:
    """Online hashes vs the Spark recompute as of the cut; fails below the min share."""
    return steps.consistency_gate(settings(), run)


@task
def shadow_compare(run: dict) -> dict:
    """The version beside the active one; fails only if an unchanged feature differs."""
    return steps.shadow_compare(settings(), run)


@task
def promote(run: dict) -> dict:
    """Flip the active pointer to the version (unless the promote param is off)."""
    return steps.promote(settings(), run)


@task
def retire_previous(run: dict) -> dict:
    """Schedule the expiry of the previous version's keys (after the rollback window)."""
    return steps.retire_previous(settings(), run)


with DAG(
    dag_id="feature_backfill",
    description="Backfill a feature-set version, gate it (GX, consistency, shadow), promote it",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["features", "spark", "batch", "promotion"],
    default_args=DEFAULT_ARGS,
    params={
        "feature_set": Param("spending", type="string", title="Feature set",
                             pattern="^[a-z][a-z0-9_]*$",
                             description="The set's name (e.g. spending); its version is "
                                         "below. `mercury features list` shows them."),
        "version": Param(1, type="integer", minimum=1, title="Version"),
        "start": Param(type="string", format="date", title="First history day (UTC)"),
        "end": Param(type="string", format="date", title="Last history day (UTC)",
                     description="Inclusive; before today (UTC)."),
        "promote": Param(True, type="boolean", title="Promote when every gate passes"),
        "cut_ms": Param(None, type=["null", "integer"], minimum=0,
                        title="Warm-start cut (epoch ms)",
                        description="Empty: the newest arrival of the set's stream in the lake."),
    },
    doc_md=__doc__,
):
    run = plan()
    chain = [backfill_history(run), check_history(run), warm_start_online(run),
             consistency_gate(run), shadow_compare(run), promote(run), retire_previous(run)]
    for before, after in zip(chain, chain[1:], strict=False):
        before >> after

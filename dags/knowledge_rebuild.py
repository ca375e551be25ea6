"""knowledge_rebuild: build a new knowledge-index version, judge it, serve it only if it is as
good (triggered by hand); or roll the alias back one step.

Params: ``embedding_model``, ``max_tokens`` and ``overlap_tokens`` (empty: the configured
``retrieval`` values) say what to build; ``action`` is ``rebuild`` or ``rollback``.

``rebuild`` (``mercury.retrieval.rebuild``; steps in ``mercury_airflow.tasks.knowledge_rebuild``):

- ``build``: registers the candidate version as *building* (from then on the indexer keeps it
  up to date as well) and fills it from the whole ``knowledge_documents`` stream, printing
  progress. Its name comes from the DAG run, so a retry resumes the same version.
- ``evaluate``: recall@5 and MRR on ``mercury/retrieval/eval_queries.yaml`` for the candidate
  and for the serving version, each queried with the model it was built with, plus document
  parity with the stream.
- ``decide``: the gate. Prints the decision and its reasons, pushes them as XCom (key
  ``decision``) and branches: ``swap`` when the candidate has exactly the stream's live
  documents and recall@5 and MRR are both at least the serving version's; ``refuse``
  otherwise.
- ``swap`` points the alias at the candidate (the replaced version stays *ready* for a
  rollback); ``refuse`` retires the candidate and logs why. Exactly one of them runs, the
  other shows as skipped.
- ``abandon`` runs only if build, evaluate, decide or swap failed: it retires the half-made
  candidate so the indexer stops maintaining it (never a version the alias serves).

A refused candidate is a SUCCESSFUL run with ``refuse`` taken, not a failed one. The gate
refusing a worse index is the system working: a red run would page on-call for nothing, be
retried by Airflow (the same refusal twice), and look exactly like a real breakage (index
unreachable, out of memory). So: red means broken, go fix; a green run says in its graph what
happened, ``swap`` green = the new version serves, ``refuse`` green = the gate kept the old
one, with the reasons (e.g. "recall@5 0.375 < serving 0.825") in the ``decide`` and
``refuse`` logs and the ``decide`` XCom.

``rollback`` points the alias back at the version it served before the last swap, in one
step. It refuses to serve a retired version (no longer maintained, so stale).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, TriggerRule, task
from mercury_airflow.tasks import knowledge_rebuild as steps
from mercury_airflow.tasks import settings

MODELS = ["all-MiniLM-L6-v2", "hashing-384"]
ACTIONS = ["rebuild", "rollback"]
DEFAULT_ARGS = {"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=1)}


@task.branch
def choose(params=None) -> str:
    """``build`` for a rebuild, ``rollback`` for a rollback."""
    return "build" if params["action"] == "rebuild" else "rollback"


@task
def build(params=None, dag_run=None) -> str:
    """Register the candidate version and fill it from the document stream."""
    return steps.build_for_run(settings(), params, dag_run.run_after)["version"]


@task
def evaluate(version: str) -> dict:
    """recall@5, MRR and parity of the candidate and of the serving version."""
    return steps.evaluate_candidate(settings(), version)


@task.branch
def decide(evaluations: dict, ti=None) -> str:
    """The gate: ``swap`` or ``refuse``, with the reasons printed and pushed as XCom."""
    decision = steps.decide_and_report(evaluations)
    ti.xcom_push(key="decision", value=decision)
    return "swap" if decision["swap"] else "refuse"


@task
def swap(version: str) -> dict:
    """Serve the candidate; the replaced version stays ready for a rollback."""
    return steps.swap_to(settings(), version)


@task
def refuse(version: str, ti=None) -> dict:
    """Retire the candidate; the alias keeps serving what it served."""
    decision = ti.xcom_pull(task_ids="decide", key="decision")
    return steps.refuse_candidate(settings(), version, decision["reasons"])


@task
def rollback() -> dict:
    """Point the alias back at the version it served before the last swap."""
    return steps.roll_back(settings())


@task(trigger_rule=TriggerRule.ONE_FAILED)
def abandon(params=None, dag_run=None) -> str | None:
    """After a failure: retire the candidate so the indexer stops maintaining it."""
    return steps.abandon_for_run(settings(), params, dag_run.run_after)


with DAG(
    dag_id="knowledge_rebuild",
    description="Rebuild the knowledge index; swap the alias only if as good; or roll back",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["knowledge", "retrieval", "rebuild"],
    default_args=DEFAULT_ARGS,
    params={
        "action": Param("rebuild", enum=ACTIONS),
        "embedding_model": Param(MODELS[0], enum=MODELS,
                                 description="hashing-384 is a deliberately weak baseline"),
        "max_tokens": Param(None, type=["null", "integer"], minimum=16, maximum=256,
                            description="chunk budget in WordPiece tokens; empty: "
                                        "retrieval.max_tokens"),
        "overlap_tokens": Param(None, type=["null", "integer"], minimum=0,
                                description="overlap between consecutive chunks; empty: "
                                            "retrieval.overlap_tokens"),
    },
    doc_md=__doc__,
):
    candidate = build()
    evaluations = evaluate(candidate)
    gate = decide(evaluations)
    swapped = swap(candidate)
    choose() >> [candidate, rollback()]
    gate >> [swapped, refuse(candidate)]
    [candidate, evaluations, gate, swapped] >> abandon()

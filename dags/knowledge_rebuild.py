"""knowledge_rebuild: build a new knowledge-index version, judge it, serve it only if it is as
good (triggered by hand); or roll the alias back one step.

Params: ``embedding_model``, ``max_tokens`` and ``overlap_tokens`` (empty: the configured
``retrieval`` values) say what to build; ``action`` is ``rebuild`` or ``rollback``.

``rebuild`` (``mercury.retrieval.rebuild``; glue in ``mercury_airflow.operators.knowledge``):

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

MODELS = ["all-MiniLM-L6-v2", "hashing-384"]
ACTIONS = ["rebuild", "rollback"]
DEFAULT_ARGS = {"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=1)}


def _settings():
    from mercury.config import load_settings

    return load_settings()


def _candidate(params, dag_run) -> tuple:
    """Settings and the candidate's chunking and name, from the params and the run."""
    from mercury_airflow.operators.knowledge import candidate_name, chunking_for

    settings = _settings()
    chunking = chunking_for(settings, params["max_tokens"], params["overlap_tokens"])
    created_at_ms = int(dag_run.run_after.timestamp() * 1000)
    return settings, chunking, created_at_ms, candidate_name(
        settings, params["embedding_model"], chunking, created_at_ms)


@task.branch
def choose(params=None) -> str:
    """``build`` for a rebuild, ``rollback`` for a rollback."""
    return "build" if params["action"] == "rebuild" else "rollback"


@task
def build(params=None, dag_run=None) -> str:
    """Register the candidate version and fill it from the document stream."""
    from mercury_airflow.operators.knowledge import build_candidate

    settings, chunking, created_at_ms, _ = _candidate(params, dag_run)
    return build_candidate(settings, params["embedding_model"], chunking,
                           created_at_ms)["version"]


@task
def evaluate(version: str) -> dict:
    """recall@5, MRR and parity of the candidate and of the serving version."""
    from mercury_airflow.operators.knowledge import evaluate_candidate

    return evaluate_candidate(_settings(), version)


@task.branch
def decide(evaluations: dict, ti=None) -> str:
    """The gate: ``swap`` or ``refuse``, with the reasons printed and pushed as XCom."""
    from mercury_airflow.operators.knowledge import decide_swap

    decision = decide_swap(evaluations)
    verdict = "SWAP" if decision.swap else "REFUSE"
    print(f"decision: {verdict} {evaluations['candidate']['version']}", flush=True)
    for reason in decision.reasons:
        print(f"  - {reason}", flush=True)
    ti.xcom_push(key="decision", value={"swap": decision.swap, "reasons": list(decision.reasons),
                                        **evaluations})
    return "swap" if decision.swap else "refuse"


@task
def swap(version: str) -> dict:
    """Serve the candidate; the replaced version stays ready for a rollback."""
    from mercury_airflow.operators.knowledge import swap_to

    return swap_to(_settings(), version)


@task
def refuse(version: str, ti=None) -> dict:
    """Retire the candidate; the alias keeps serving what it served."""
    from mercury_airflow.operators.knowledge import refuse_candidate

    decision = ti.xcom_pull(task_ids="decide", key="decision")
    return refuse_candidate(_settings(), version, decision["reasons"])


@task
def rollback() -> dict:
    """Point the alias back at the version it served before the last swap."""
    from mercury_airflow.operators.knowledge import roll_back

    return roll_back(_settings())


@task(trigger_rule=TriggerRule.ONE_FAILED)
def abandon(params=None, dag_run=None) -> str | None:
    """After a failure: retire the candidate so the indexer stops maintaining it."""
    from mercury_airflow.operators.knowledge import abandon_candidate

    settings, _, _, name = _candidate(params, dag_run)
    return abandon_candidate(settings, name)


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

"""The platform's main job on the local defaults, end to end.

1. bring the local stack up (Redis, Postgres, Flink, Airflow);
2. check the contracts;
3. generate a seeded MercuryPay world into the event log and the Postgres profile table;
4. validate the event streams into the lake, bad records into their dead-letter streams;
5. prove nothing was lost: dead letters against the generator's manifest, position by position;
6. build the dbt project on the lake (DuckDB) with its tests;
7. run the Great Expectations checkpoint of the transaction contract on the lake table;
8. build the knowledge index from the document stream (MiniLM), serve it behind its alias,
   and answer a sample question;
9. the context API: online features into Redis by the Flink SQL job on the local cluster,
   ``mercury serve``, questions for one user, a new purchase of another timed from the event
   log into the API's answer, then the audit trail through the lake into the compliance view
   (mercury/serving/demo.py);
10. the batch path: spending's feature history in Spark, then every value the context API
    served in step 9 recomputed in Spark as of its time (mercury/features/offline/batch_demo.py);
11. print a summary. Exits non-zero when any step fails.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import cast

from mercury.config import FileEventLogConfig, Settings
from mercury.generator.knobs import Knobs

VALIDATED_STREAMS = ("transactions", "user_activity", "risk_signals")


def run_demo(settings: Settings, knobs: Knobs, with_airflow: bool = True,
             with_postgres: bool = True) -> list[str]:
    """Every step in order; returns what failed (empty: the demo worked)."""
    from mercury.contracts.check import check_everything
    from mercury.generator.run import generate
    from mercury.lake.load import load_stream
    from mercury.quality.reconcile import reconcile
    from mercury.stack import stack

    if not isinstance(settings.event_log, FileEventLogConfig):
        raise SystemExit("the demo runs on the local event log (MERCURY_PROFILE=local)")
    started = time.perf_counter()
    failures: list[str] = []

    _step("1/10 local stack")
    parts = ["redis", "postgres", "flink"] + (["airflow"] if with_airflow else [])
    health = stack.up(settings, parts)

    _step("2/10 contracts")
    problems = check_everything()
    failures += problems
    print("contracts ok" if not problems else "\n".join(problems))

    _step("3/10 generate traffic (fresh event log and lake)")
    _fresh_start(settings)
    run = generate(settings, knobs, with_postgres=with_postgres)
    counts = run.manifest.counts()
    print(f"{sum(counts['generated'].values()):,} events, {sum(counts['lines'].values()):,} "
          f"lines in {run.seconds:.1f}s ({run.events_per_s:,.0f} events/s); "
          f"manifest {run.manifest_path}")

    _step("4/10 validate into the lake")
    reports = [load_stream(settings, name) for name in VALIDATED_STREAMS]
    for report in reports:
        print(report.summary())

    _step("5/10 reconcile dead letters with the manifest")
    check = reconcile(run.manifest.as_dict(), settings.event_log.root, list(VALIDATED_STREAMS))
    for label, n in check.expected.items():
        print(f"{label:<45} injected {n:>6,}   dead-lettered {check.found.get(label, 0):>6,}")
    if not check.ok:
        failures.append(f"dead letters do not match the manifest: missing {check.missing[:3]}, "
                        f"unexpected {check.unexpected[:3]}, repeated {check.repeated[:3]}")

    _step("6/10 dbt build (DuckDB)")
    failures += _dbt_build()

    _step("7/10 Great Expectations checkpoint: transaction contract")
    failures += _expectations(settings)

    _step("8/10 knowledge index: rebuild, serve, retrieve")
    failures += _knowledge(settings)

    _step("9/10 context API: the Flink job's features, questions, a live purchase, audit")
    from mercury.serving.demo import run_context_demo

    served_since_ms = int(time.time() * 1000)
    problems = run_context_demo(settings)
    failures += problems
    for problem in problems:  # now: the next step needs what this one made
        print(f"FAIL {problem}")

    _step("10/10 batch path: feature history in Spark, consistency of what was served")
    from mercury.features.offline.batch_demo import run_batch_demo

    failures += run_batch_demo(settings, served_since_ms)

    _step("summary")
    for h in health:
        print(h.line())
    print(f"events by stream: {counts['generated']}")
    print(f"anomalies injected: malformed {counts['malformed']}, duplicates "
          f"{counts['duplicates']:,}, late {counts['late']:,}, out of order "
          f"{counts['out_of_order']:,}, schema-evolved {counts['evolved']:,}")
    print(f"profiles in Postgres: {counts['profiles']:,} (+{counts['profile_updates']:,} "
          f"updates)" if with_postgres else "profiles: skipped (--no-postgres)")
    print(f"done in {time.perf_counter() - started:.0f}s: "
          f"{'OK' if not failures else f'{len(failures)} FAILURE(S)'}")
    for failure in failures:
        print(f"FAIL {failure}")
    return failures


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _fresh_start(settings: Settings) -> None:
    """Each demo run is its own world: clear the event log, lake, warehouse and the Flink
    job's lake staging it writes."""
    vectors = getattr(settings.retrieval.index, "path", None)
    # The demo runs on the local (file) event log.
    for path in (cast(FileEventLogConfig, settings.event_log).root, settings.lake.warehouse,
                 settings.warehouse.duckdb_path, vectors, settings.data_dir / "lake_staging"):
        if path is None or "://" in str(path):
            continue
        path = Path(path)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _dbt_build() -> list[str]:
    from mercury.warehouse.dbt_runner import DbtError, run_dbt

    try:
        # The models over the validated event tables; the audit models are built in step 9,
        # once the context API has produced audit records.
        result = run_dbt(["build", "--select", "source:lake+"])
    except DbtError as exc:
        return [f"dbt build: {exc}"]
    print(result.summary())
    return []


def _expectations(settings: Settings) -> list[str]:
    from mercury.lake import tables
    from mercury.quality.expectations import run_transaction_checkpoint

    frame = tables.read(settings, "transactions").to_pandas()
    outcome = run_transaction_checkpoint(frame)
    print(f"checkpoint {'passed' if outcome.success else 'FAILED'} on {len(frame):,} rows")
    if outcome.success:
        return []
    return [f"expectation failed: {name}" for name in outcome.failed_expectations]


def _knowledge(settings: Settings) -> list[str]:
    from mercury.retrieval.chunking import ChunkingSpec
    from mercury.retrieval.embedding import open_embedder
    from mercury.retrieval.factory import open_index
    from mercury.retrieval.index import SearchFilter
    from mercury.retrieval.rebuild import rebuild
    from mercury.retrieval.retriever import Retriever

    cfg = settings.retrieval
    index = open_index(cfg)
    embedder = open_embedder(cfg.embedding_model, cfg.embed_batch_size)
    outcome = rebuild(settings, index, embedder, ChunkingSpec(cfg.max_tokens, cfg.overlap_tokens),
                      created_at_ms=int(time.time() * 1000))
    print(outcome.summary())
    question = "my card was refused at the till, what happened?"
    answer = Retriever(index, cfg.alias, lambda _name: embedder).retrieve(
        question, k=3, filters=SearchFilter(language="en"))
    print(f"Q: {question}")
    for hit in answer.hits:
        print(f"  {hit.score:.3f} {hit.doc_id} > {hit.heading}: {hit.text[:70]}")
    problems = [] if outcome.decision.swap else [f"knowledge rebuild refused: {outcome.summary()}"]
    if not answer.hits or answer.hits[0].doc_id != "policy-declines-en":
        problems.append(f"knowledge search: expected policy-declines-en first for {question!r}")
    return problems

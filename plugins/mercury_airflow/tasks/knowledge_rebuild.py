"""The knowledge_rebuild DAG's steps: thin glue over ``mercury.retrieval.rebuild``.

One function per task, each taking the settings and plain values (what XCom carries) and
printing what it did, so the task log reads as the story of the rebuild:

- ``build_candidate``: register the new version (building) and fill it from the stream.
- ``evaluate_candidate``: recall@5, MRR and document parity of the candidate and of the
  serving version, each queried with the model it was built with.
- ``decide_swap``: the gate's verdict and its reasons.
- ``swap_to`` / ``refuse_candidate``: serve the candidate, or retire it.
- ``roll_back``: point the alias at the previous version in one step.
- ``abandon_candidate``: retire a candidate a failed run left behind, so the indexer stops
  maintaining it.

Versions travel between tasks by name and are looked up again in the index: a task never
trusts a stale copy of a version's state. Models are loaded once per process (MiniLM takes
~20 s); ``airflow dags test`` runs every task in one process, a worker one per task.

Importing this module is cheap: mercury.retrieval, numpy, torch and lancedb are imported by
the functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from mercury_airflow.tasks import log_line

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.retrieval.chunking import ChunkingSpec
    from mercury.retrieval.embedding import Embedder
    from mercury.retrieval.index import VectorIndex, VersionSpec
    from mercury.retrieval.rebuild import Decision, Evaluation

Log = Callable[[str], None]


@cache
def _loaded_embedder(name: str, batch_size: int) -> Embedder:
    from mercury.retrieval.embedding import open_embedder

    return open_embedder(name, batch_size)


def embedder_for(settings: Settings, spec: VersionSpec) -> Embedder:
    """The model a version was built with, loaded once per process; refuses when this
    process has other weights under the same name (the vectors would not compare)."""
    from mercury.retrieval.index import VectorIndexError

    embedder = _loaded_embedder(spec.embedding_model, settings.retrieval.embed_batch_size)
    if embedder.version != spec.embedding_version:
        raise VectorIndexError(
            f"{spec.name} was built with {spec.embedding_model}@{spec.embedding_version} but "
            f"this worker has {embedder.label}: its questions would be embedded by another "
            f"model than its chunks. Run the rebuild on a worker with those weights")
    return embedder


def chunking_for(settings: Settings, max_tokens: int | None, overlap_tokens: int | None
                 ) -> ChunkingSpec:
    """The chunking to build with: the given values, or the configured ones where None."""
    from mercury.retrieval.chunking import ChunkingSpec

    cfg = settings.retrieval
    spec = ChunkingSpec(cfg.max_tokens if max_tokens is None else int(max_tokens),
                        cfg.overlap_tokens if overlap_tokens is None else int(overlap_tokens))
    if not 16 <= spec.max_tokens <= 256:
        raise ValueError(f"max_tokens must be within 16..256 (MiniLM reads at most 256 "
                         f"tokens), got {spec.max_tokens}")
    if not 0 <= spec.overlap_tokens < spec.max_tokens:
        raise ValueError(f"overlap_tokens must be within 0..max_tokens-1, got "
                         f"{spec.overlap_tokens} with max_tokens {spec.max_tokens}")
    return spec


def candidate_name(settings: Settings, model: str, chunking: ChunkingSpec,
                   created_at_ms: int) -> str:
    """The name ``build_candidate`` gives the version, known without loading the model."""
    from mercury.retrieval.index import version_name

    return version_name(settings.retrieval.alias, model, chunking.name, created_at_ms)


def _run_candidate(settings: Settings, params: dict, run_after: datetime
                   ) -> tuple[ChunkingSpec, int, str]:
    """The candidate's chunking, creation time and name, from the run's params and its
    ``run_after`` (so a retry resumes the same version)."""
    chunking = chunking_for(settings, params["max_tokens"], params["overlap_tokens"])
    created_at_ms = int(run_after.timestamp() * 1000)
    return chunking, created_at_ms, candidate_name(settings, params["embedding_model"],
                                                   chunking, created_at_ms)


def build_for_run(settings: Settings, params: dict, run_after: datetime, *,
                  log: Log = log_line) -> dict[str, Any]:
    """``build_candidate`` with what the DAG run's params and time say."""
    chunking, created_at_ms, _ = _run_candidate(settings, params, run_after)
    return build_candidate(settings, params["embedding_model"], chunking, created_at_ms,
                           log=log)


def abandon_for_run(settings: Settings, params: dict, run_after: datetime, *,
                    log: Log = log_line) -> str | None:
    """``abandon_candidate`` of the version this run builds."""
    return abandon_candidate(settings, _run_candidate(settings, params, run_after)[2], log=log)


def find_version(index: VectorIndex, alias: str, name: str) -> VersionSpec | None:
    return next((v for v in index.versions(alias) if v.name == name), None)


def _version(index: VectorIndex, alias: str, name: str) -> VersionSpec:
    from mercury.retrieval.index import VectorIndexError

    spec = find_version(index, alias, name)
    if spec is None:
        raise VectorIndexError(f"no version {name!r} for alias {alias!r}")
    return spec


def _index(settings: Settings, index: VectorIndex | None) -> VectorIndex:
    from mercury.retrieval.factory import open_index

    return index if index is not None else open_index(settings.retrieval)


def build_candidate(settings: Settings, model: str, chunking: ChunkingSpec,
                    created_at_ms: int, *, index: VectorIndex | None = None,
                    log: Log = log_line) -> dict[str, Any]:
    """Register the candidate as building and fill it from the whole document stream.

    ``created_at_ms`` should come from the DAG run, not the clock: a retry then resumes the
    same version (creating it again does nothing, and the ledger skips what it already has)
    instead of leaving a half-built one behind for the indexer to maintain forever.
    """
    from mercury.retrieval.rebuild import fill_version, start_version

    index = _index(settings, index)
    alias = settings.retrieval.alias
    embedder = _loaded_embedder(model, settings.retrieval.embed_batch_size)
    spec = start_version(index, alias, embedder, chunking, created_at_ms)
    spec = _version(index, alias, spec.name)
    if spec.state == "retired":
        # A cleared run building again a version it had refused: it was not maintained
        # since, so it must be maintained again while it is refilled and judged.
        index.set_state(spec.name, "building")
    log(f"building {spec.name} with {embedder.label}, chunking {chunking.name} "
        f"(alias {alias} -> {index.alias_target(alias) or 'nothing yet'})")

    def progress(done: int, stats) -> None:
        log(f"  {done:,} documents: {stats.applied:,} written, {stats.stale:,} already there, "
            f"{stats.chunks_embedded:,} chunks embedded, {stats.chunks_reused:,} reused")

    stats = fill_version(settings, index, spec, embedder, progress=progress)
    live = len(index.live_documents(spec.name))
    log(f"built {spec.name}: {live:,} live documents, {stats.chunks_embedded:,} chunks "
        f"embedded, {stats.truncated:,} bodies truncated")
    return {"version": spec.name, "live_documents": live, "applied": stats.applied,
            "chunks_embedded": stats.chunks_embedded, "truncated": stats.truncated}


def evaluate_candidate(settings: Settings, version: str, *, index: VectorIndex | None = None,
                       log: Log = log_line) -> dict[str, dict | None]:
    """Measure the candidate and the serving version (if any) on the same questions and the
    same source snapshot, each with its own model."""
    from mercury.retrieval.rebuild import evaluate, live_source_documents, load_queries

    index = _index(settings, index)
    alias = settings.retrieval.alias
    queries = load_queries()
    source = live_source_documents(settings)
    candidate_spec = _version(index, alias, version)
    candidate = evaluate(index, candidate_spec, embedder_for(settings, candidate_spec),
                         queries, source)
    log(describe("candidate", candidate_spec, candidate))
    serving = None
    target = index.alias_target(alias)
    if target is not None and target != version:
        serving_spec = index.resolve(alias)
        serving = evaluate(index, serving_spec, embedder_for(settings, serving_spec),
                           queries, source)
        log(describe("serving", serving_spec, serving))
    else:
        log(f"serving: nothing (alias {alias} points at no version yet)")
    return {"candidate": as_plain(candidate),
            "serving": None if serving is None else as_plain(serving)}


def as_plain(evaluation: Evaluation) -> dict:
    """``Evaluation.as_dict`` shaped as XCom carries it (JSON: lists, not tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in evaluation.as_dict().items()}


def describe(role: str, spec: VersionSpec, evaluation: Evaluation) -> str:
    parity = "parity ok" if evaluation.parity else (
        f"parity FAILS: {len(evaluation.missing)} missing, {len(evaluation.extra)} extra")
    return (f"{role}: {spec.name} ({spec.embedding_model}, {spec.chunking}): recall@5 "
            f"{evaluation.recall_at_5}, MRR {evaluation.mrr} on {evaluation.queries} questions; "
            f"{evaluation.live_documents:,} live documents, source {evaluation.source_documents:,}"
            f", {parity}")


def evaluation_from(data: dict) -> Evaluation:
    """An ``Evaluation`` back from its ``as_dict`` (as XCom carried it)."""
    from mercury.retrieval.rebuild import Evaluation

    fields = {k: v for k, v in data.items() if k != "parity"}
    return Evaluation(**{**fields, "missing": tuple(fields.get("missing", ())),
                         "extra": tuple(fields.get("extra", ()))})


def decide_swap(evaluations: dict[str, dict | None]) -> Decision:
    from mercury.retrieval.rebuild import decide

    serving = evaluations.get("serving")
    # The candidate is always evaluated (only the serving version may be absent).
    return decide(evaluation_from(cast(dict, evaluations["candidate"])),
                  None if serving is None else evaluation_from(serving))


def decide_and_report(evaluations: dict[str, dict | None], *,
                      log: Log = log_line) -> dict[str, Any]:
    """The gate's verdict, logged with its reasons; plain values for XCom."""
    decision = decide_swap(evaluations)
    log(f"decision: {'SWAP' if decision.swap else 'REFUSE'} "
        f"{cast(dict, evaluations['candidate'])['version']}")
    for reason in decision.reasons:
        log(f"  - {reason}")
    return {"swap": decision.swap, "reasons": list(decision.reasons), **evaluations}


def swap_to(settings: Settings, version: str, *, index: VectorIndex | None = None,
            log: Log = log_line) -> dict[str, Any]:
    from mercury.retrieval.rebuild import promote

    index = _index(settings, index)
    alias = settings.retrieval.alias
    previous = promote(index, _version(index, alias, version))
    retired = [v.name for v in index.versions(alias) if v.state == "retired"]
    log(f"swapped: alias {alias} -> {version} (was {previous or 'nothing'}); "
        f"{previous or 'no version'} kept ready for a one-step rollback")
    return {"alias": alias, "target": index.alias_target(alias), "previous": previous,
            "retired": retired}


def refuse_candidate(settings: Settings, version: str, reasons: list[str], *,
                     index: VectorIndex | None = None, log: Log = log_line) -> dict[str, Any]:
    from mercury.retrieval.rebuild import refuse

    index = _index(settings, index)
    alias = settings.retrieval.alias
    refuse(index, _version(index, alias, version))
    target = index.alias_target(alias)
    log(f"REFUSED {version}: {'; '.join(reasons)}. The candidate is retired; alias {alias} "
        f"still -> {target or 'nothing'}")
    return {"alias": alias, "target": target, "refused": version, "reasons": list(reasons)}


def roll_back(settings: Settings, *, index: VectorIndex | None = None,
              log: Log = log_line) -> dict[str, Any]:
    """One alias move back; the engine refuses a retired (no longer maintained) version."""
    from mercury.retrieval.rebuild import rollback

    index = _index(settings, index)
    alias = settings.retrieval.alias
    before = index.alias_target(alias)
    after = rollback(index, alias)
    log(f"rolled back: alias {alias} -> {after} (was {before})")
    return {"alias": alias, "target": after, "previous": before}


def abandon_candidate(settings: Settings, version: str, *, index: VectorIndex | None = None,
                      log: Log = log_line) -> str | None:
    """After a failed run: retire the candidate if it exists and does not serve, so that the
    indexer stops maintaining a version nobody will judge. Returns what it retired."""
    index = _index(settings, index)
    alias = settings.retrieval.alias
    spec = find_version(index, alias, version)
    if spec is None or spec.state == "retired" or index.alias_target(alias) == version:
        log(f"nothing to clean up: {version} is "
            f"{'absent' if spec is None else 'serving' if spec.state != 'retired' else 'retired'}")
        return None
    index.set_state(version, "retired")
    log(f"retired {version} (was {spec.state}): the run failed before it could be judged")
    return version

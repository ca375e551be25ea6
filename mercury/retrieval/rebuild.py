"""A full rebuild: a new index version from the whole document stream, judged, then served.

1. ``start_version`` records the new version as *building*. From then on the running indexer
   maintains it too, so no change that arrives during the build is missed.
2. ``fill_version`` reads the whole ``knowledge_documents`` stream (a compacted topic in
   production, so the newest change of every document is still there) and applies it through
   the same ledger-guarded path as the indexer: a change both of them apply lands once, and
   an older one never overwrites a newer one.
3. ``evaluate`` measures recall@5 and MRR on the labelled queries kept in the repository
   (``eval_queries.yaml``), overall and per language asked in, searching as the retriever
   does (hybrid where the version has lexical search), and compares the version's live
   documents with the source's.
4. ``decide`` swaps only when the candidate has exactly the source's live documents and is
   at least as good as the serving version on both measures; otherwise it retires the
   candidate and says why. ``rollback`` points the alias back in one step; the previous
   version stays maintained (state *ready*) until the next successful swap retires it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from mercury.config import Settings
from mercury.eventlog.factory import open_consumer, writer_schemas
from mercury.retrieval.chunking import ChunkingSpec
from mercury.retrieval.documents import STREAM, Document, Rejected, parse_change
from mercury.retrieval.embedding import Embedder
from mercury.retrieval.index import (
    SearchFilter,
    VectorIndex,
    VectorIndexError,
    VersionSpec,
    version_name,
)
from mercury.retrieval.indexer import ApplyStats, DocumentApplier, newest_per_document

QUERIES_PATH = Path(__file__).with_name("eval_queries.yaml")
K = 5


@dataclass(frozen=True)
class LabelledQuery:
    question: str
    relevant: tuple[str, ...]  # doc ids that answer it
    language: str  # the language the question is asked in
    filters: SearchFilter = SearchFilter()


@dataclass(frozen=True)
class Evaluation:
    version: str
    recall_at_5: float
    mrr: float
    queries: int
    live_documents: int
    source_documents: int
    missing: tuple[str, ...] = ()  # live in the source, absent from the version
    extra: tuple[str, ...] = ()    # present in the version, deleted or unknown in the source
    # language asked in -> {"recall_at_5", "mrr", "queries"}
    by_language: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def parity(self) -> bool:
        return not self.missing and not self.extra

    def as_dict(self) -> dict:
        return {**asdict(self), "parity": self.parity}


@dataclass(frozen=True)
class Decision:
    swap: bool
    reasons: tuple[str, ...]


QUERY_KEYS = {"question", "relevant", "filters"}


def load_queries(path: Path = QUERIES_PATH) -> list[LabelledQuery]:
    """The labelled questions, grouped in the file by the language they are asked in."""
    raw = yaml.safe_load(path.read_text())
    queries = []
    for language, items in raw["questions"].items():
        for item in items:
            unknown = set(item) - QUERY_KEYS
            if unknown or not item.get("question") or not item.get("relevant"):
                raise ValueError(f"{path.name}: {item!r} needs question and relevant (and "
                                 f"optional filters), not {sorted(unknown)}")
            queries.append(LabelledQuery(item["question"], tuple(item["relevant"]), language,
                                         SearchFilter(**item.get("filters", {}))))
    return queries


def labelled_corpus(updated_at: int = 1_793_491_200_000) -> list[Document]:
    """The documents the labelled questions are written against: the generator's default
    world (``Knobs()``), each as first published. Tests and bench/retrieval_quality.py index
    these; a real rebuild reads the stream, which the generator filled with the same ones."""
    import random

    from mercury.generator.documents import build_documents, render
    from mercury.generator.knobs import Knobs
    from mercury.generator.world import build_world

    knobs = Knobs()
    rng = random.Random(knobs.seed)  # the generator's order of draws: world, then documents
    world = build_world(rng, knobs.users, knobs.merchants)
    return [Document(doc_id=spec.doc_id, change_id=f"labelled-{spec.doc_id}", deleted=False,
                     updated_at=updated_at, doc_type=spec.doc_type, language=spec.language,
                     title=spec.title, body=render(spec, 0), source_url=spec.source_url,
                     merchant_id=spec.merchant_id)
            for spec in build_documents(rng, world.merchants, knobs.documents)]


def read_source(settings: Settings) -> Iterator[Document]:
    """Every valid change in the stream, in log order (rejects are the indexer's to
    dead-letter; the rebuild only skips them). Read as a throw-away consumer group that never
    commits, up to the end positions taken at its start, so it works on the file log and on
    Kafka alike (JSON or Confluent Avro)."""
    cfg = settings.retrieval
    schemas_by_id = writer_schemas(settings)
    with open_consumer(settings, f"knowledge-rebuild-{uuid.uuid4().hex}", [STREAM]) as source:
        for batch in source.read_to_end(max_messages=2_000):
            for message in batch:
                parsed = parse_change(message.value, cfg.languages, cfg.max_body_chars,
                                      schemas_by_id)
                if not isinstance(parsed, Rejected):
                    yield parsed


def live_source_documents(settings: Settings) -> set[str]:
    return {d.doc_id for d in newest_per_document(list(read_source(settings))) if not d.deleted}


def start_version(index: VectorIndex, alias: str, embedder: Embedder, chunking: ChunkingSpec,
                  created_at_ms: int) -> VersionSpec:
    spec = VersionSpec(name=version_name(alias, embedder.name, chunking.name, created_at_ms),
                       alias=alias, embedding_model=embedder.name,
                       embedding_version=embedder.version, chunking=chunking.name,
                       dimension=embedder.dimension, created_at_ms=created_at_ms)
    index.create_version(spec)
    index.set_state(spec.name, "building")  # a re-run of a refused version is maintained again
    return spec


def fill_version(settings: Settings, index: VectorIndex, spec: VersionSpec, embedder: Embedder,
                 batch_size: int = 256, progress: Callable[[int, ApplyStats], None] | None = None
                 ) -> ApplyStats:
    applier = DocumentApplier(index, spec.alias, lambda _name: embedder)
    total = ApplyStats()
    documents = newest_per_document(list(read_source(settings)))
    for start in range(0, len(documents), batch_size):
        stats = applier.apply(documents[start:start + batch_size], versions=[spec])
        for name, value in asdict(stats).items():
            setattr(total, name, getattr(total, name) + value)
        if progress is not None:
            progress(min(start + batch_size, len(documents)), total)
    index.optimize(spec.name)
    return total


def score_queries(index: VectorIndex, spec: VersionSpec, embedder: Embedder,
                  queries: list[LabelledQuery], hybrid: bool = True
                  ) -> list[tuple[float, float]]:
    """(recall@5, reciprocal rank) of each question; ``hybrid=False`` searches by kNN alone
    (the "before" of docs/PERFORMANCE.md)."""
    vectors = embedder.embed([q.question for q in queries])
    scores = []
    for query, vector in zip(queries, vectors, strict=True):
        hits = index.search(spec.name, vector, K, query.filters,
                            text=query.question if hybrid else None)
        ranked = [hit.doc_id for hit in hits]
        relevant = set(query.relevant)
        first = next((rank for rank, doc in enumerate(ranked, 1) if doc in relevant), None)
        scores.append((len(relevant & set(ranked)) / len(relevant), 1.0 / first if first else 0.0))
    return scores


def summarise(queries: list[LabelledQuery], scores: list[tuple[float, float]]
              ) -> dict[str, dict[str, float]]:
    """recall@5, MRR and the number of questions, overall ("all") and per language."""
    groups: dict[str, list[tuple[float, float]]] = {"all": scores}
    for query, score in zip(queries, scores, strict=True):
        groups.setdefault(query.language, []).append(score)
    return {group: {"recall_at_5": round(sum(s[0] for s in items) / len(items), 4),
                    "mrr": round(sum(s[1] for s in items) / len(items), 4),
                    "queries": len(items)} for group, items in groups.items()}


def evaluate(index: VectorIndex, spec: VersionSpec, embedder: Embedder,
             queries: list[LabelledQuery], source_live: set[str]) -> Evaluation:
    if not queries:
        raise ValueError("no labelled queries: a version cannot be judged without them")
    summary = summarise(queries, score_queries(index, spec, embedder, queries))
    overall = summary.pop("all")
    live = index.live_documents(spec.name)
    return Evaluation(version=spec.name, recall_at_5=overall["recall_at_5"],
                      mrr=overall["mrr"], queries=len(queries),
                      live_documents=len(live), source_documents=len(source_live),
                      missing=tuple(sorted(source_live - live)[:20]),
                      extra=tuple(sorted(live - source_live)[:20]), by_language=summary)


def decide(candidate: Evaluation, serving: Evaluation | None) -> Decision:
    reasons = []
    if not candidate.parity:
        reasons.append(f"document parity fails: {len(candidate.missing)} live documents "
                       f"missing (e.g. {list(candidate.missing[:3])}), {len(candidate.extra)} "
                       f"that should not be there (e.g. {list(candidate.extra[:3])})")
    if serving is not None:
        if candidate.recall_at_5 < serving.recall_at_5:
            reasons.append(f"recall@5 {candidate.recall_at_5} < serving "
                           f"{serving.recall_at_5}")
        if candidate.mrr < serving.mrr:
            reasons.append(f"MRR {candidate.mrr} < serving {serving.mrr}")
    if reasons:
        return Decision(False, tuple(reasons))
    against = "no version serves yet" if serving is None else (
        f"recall@5 {candidate.recall_at_5} >= {serving.recall_at_5}, "
        f"MRR {candidate.mrr} >= {serving.mrr}")
    return Decision(True, (f"parity {candidate.live_documents} documents; {against}",))


def promote(index: VectorIndex, spec: VersionSpec) -> str | None:
    """Serve ``spec``; keep the version it replaces maintained for a one-step rollback and
    retire the ones before it (a version another rebuild is still building is left alone)."""
    index.set_state(spec.name, "ready")
    previous = index.swap_alias(spec.alias, spec.name)
    for version in index.versions(spec.alias):
        if version.name not in (spec.name, previous) and version.state == "ready":
            index.set_state(version.name, "retired")
    return previous


def refuse(index: VectorIndex, spec: VersionSpec) -> None:
    index.set_state(spec.name, "retired")


def rollback(index: VectorIndex, alias: str) -> str:
    return index.rollback_alias(alias)


@dataclass(frozen=True)
class RebuildOutcome:
    version: VersionSpec
    filled: ApplyStats
    candidate: Evaluation
    serving: Evaluation | None
    decision: Decision
    alias_target: str | None  # where the alias points afterwards

    def summary(self) -> str:
        verdict = "swapped" if self.decision.swap else "refused"
        served = "" if self.serving is None else (
            f"; serving {self.serving.version}: recall@5 {self.serving.recall_at_5}, "
            f"MRR {self.serving.mrr}")
        return (f"{verdict}: {self.version.name}: recall@5 {self.candidate.recall_at_5}, MRR "
                f"{self.candidate.mrr}, {self.candidate.live_documents} documents "
                f"(source {self.candidate.source_documents}){served}. "
                f"{' '.join(self.decision.reasons)} Alias -> {self.alias_target}")


def rebuild(settings: Settings, index: VectorIndex, embedder: Embedder, chunking: ChunkingSpec,
            created_at_ms: int, log: Callable[[str], None] = print) -> RebuildOutcome:
    """The four steps of the module doc in one call (the CLI; the DAG runs them as tasks)."""
    from mercury.retrieval.embedding import open_embedder

    alias = settings.retrieval.alias
    spec = start_version(index, alias, embedder, chunking, created_at_ms)
    log(f"building {spec.name}")
    filled = fill_version(settings, index, spec, embedder, progress=lambda n, s: log(
        f"  {n:,} documents, {s.chunks_embedded:,} chunks embedded"))
    queries, source = load_queries(), live_source_documents(settings)
    candidate = evaluate(index, spec, embedder, queries, source)
    serving = None
    if (target := index.alias_target(alias)) is not None:
        serving_spec = index.resolve(alias)
        serving_embedder = embedder if serving_spec.embedding_model == embedder.name \
            else open_embedder(serving_spec.embedding_model, settings.retrieval.embed_batch_size)
        if serving_embedder.version != serving_spec.embedding_version:
            raise VectorIndexError(
                f"the serving version {serving_spec.name} was built with "
                f"{serving_spec.embedding_model}@{serving_spec.embedding_version}; this process "
                f"has {serving_embedder.label}, so it cannot judge it fairly")
        serving = evaluate(index, serving_spec, serving_embedder, queries, source)
    decision = decide(candidate, serving)
    if decision.swap:
        promote(index, spec)
        target = spec.name
    else:
        refuse(index, spec)
    return RebuildOutcome(spec, filled, candidate, serving, decision, target)

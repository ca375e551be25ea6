"""Document changes to every maintained index version, safe to replay in any order.

For each batch of changes the indexer keeps, per document, only the newest version by
``Document.order_key`` (newest ``updated_at``; on a tie a delete wins). Then, for every version
the alias maintains (the one serving and any being built):

1. it reads the ledger entries of the batch's documents and drops every change that is not
   newer than what the version already has: a replay, a duplicate or an out-of-order update
   changes nothing, and a delete leaves a tombstone that an older upsert cannot pass;
2. it chunks the survivors with the version's chunking spec, takes the vectors of chunk ids the
   version already stores (unchanged text, unchanged id) and embeds only the rest, with the
   version's own model, refusing to mix models;
3. it writes each document's chunks and ledger entry in one ``VectorIndex.write``.

``IndexerLoop`` wraps this around a consumer group of the ``knowledge_documents`` stream:
poll, dead-letter what cannot be indexed (``documents`` names the rules), apply, flush the
dead letters, and only then commit offsets. A crash between the write and the commit replays
the batch, which step 1 makes harmless. A status file records every batch (heartbeat, counts,
lag) for the supervisor and the health DAG.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from mercury.retrieval.chunking import Chunk, ChunkingSpec, CountTokens, chunk_document
from mercury.retrieval.documents import Document
from mercury.retrieval.embedding import Embedder
from mercury.retrieval.index import (
    ChunkRow,
    DocumentWrite,
    LedgerEntry,
    VectorIndex,
    VectorIndexError,
    VersionSpec,
)

GROUP = "knowledge-indexer"


def chunking_of(spec: VersionSpec) -> ChunkingSpec:
    """The chunking spec back from its name (``sections-t200-o32``)."""
    try:
        kind, tokens, overlap = spec.chunking.split("-")
        assert kind == "sections" and tokens[0] == "t" and overlap[0] == "o"
        return ChunkingSpec(int(tokens[1:]), int(overlap[1:]))
    except (ValueError, AssertionError) as exc:
        raise VectorIndexError(f"{spec.name}: unknown chunking {spec.chunking!r}") from exc


def newest_per_document(documents: list[Document]) -> list[Document]:
    newest: dict[str, Document] = {}
    for doc in documents:
        held = newest.get(doc.doc_id)
        if held is None or doc.order_key() > held.order_key():
            newest[doc.doc_id] = doc
    return list(newest.values())


@dataclass
class ApplyStats:
    applied: int = 0          # document versions written (summed over index versions)
    stale: int = 0            # not newer than the ledger: replays, duplicates, out of order
    chunks_embedded: int = 0
    chunks_reused: int = 0
    truncated: int = 0


class DocumentApplier:
    """Applies validated documents to the versions an alias maintains."""

    def __init__(self, index: VectorIndex, alias: str, embedder_for: Callable[[str], Embedder],
                 count_tokens: CountTokens | None = None):
        self.index = index
        self.alias = alias
        self.embedder_for = embedder_for
        self.count_tokens = count_tokens

    def apply(self, documents: list[Document], versions: list[VersionSpec] | None = None
              ) -> ApplyStats:
        stats = ApplyStats()
        documents = newest_per_document(documents)
        if not documents:
            return stats
        for spec in versions if versions is not None else self.index.maintained(self.alias):
            self._apply_to(spec, documents, stats)
        return stats

    def _apply_to(self, spec: VersionSpec, documents: list[Document], stats: ApplyStats) -> None:
        ledger = self.index.ledger(spec.name, [d.doc_id for d in documents])
        fresh = [d for d in documents
                 if d.doc_id not in ledger or d.order_key() > ledger[d.doc_id].order_key]
        stats.stale += len(documents) - len(fresh)
        if not fresh:
            return
        chunking = chunking_of(spec)
        chunks = {d.doc_id: chunk_document(d, chunking, self.count_tokens) for d in fresh}
        vectors = self._vectors(spec, ledger, chunks, stats)
        writes = []
        for doc in fresh:
            rows = [_row(doc, chunk, vectors[chunk.chunk_id]) for chunk in chunks[doc.doc_id]]
            entry = LedgerEntry(doc.doc_id, doc.order_key(), doc.deleted,
                                tuple(c.chunk_id for c in chunks[doc.doc_id]))
            writes.append(DocumentWrite(entry, rows))
            stats.truncated += doc.truncated
        self.index.write(spec.name, writes)
        stats.applied += len(writes)

    def _vectors(self, spec: VersionSpec, ledger: dict[str, LedgerEntry],
                 chunks: dict[str, list[Chunk]], stats: ApplyStats) -> dict[str, np.ndarray]:
        """Stored vectors for chunks whose text the document already had; the model for the
        rest. Matched by content hash, not by id: a section inserted near the top shifts the
        position (and so the id) of every later chunk without changing its text."""
        held = {(doc_id, cid.rsplit(":", 1)[-1]): cid
                for doc_id, entry in ledger.items() for cid in entry.chunk_ids}
        wanted = [c for doc_chunks in chunks.values() for c in doc_chunks]
        source = {c.chunk_id: held[(c.doc_id, c.content_hash)] for c in wanted
                  if (c.doc_id, c.content_hash) in held}
        stored = self.index.vectors(spec.name, sorted(set(source.values())))
        vectors = {new: stored[old] for new, old in source.items() if old in stored}
        stats.chunks_reused += len(vectors)
        missing = [c for c in wanted if c.chunk_id not in vectors]
        if missing:
            embedder = self.embedder_for(spec.embedding_model)
            if embedder.version != spec.embedding_version:
                raise VectorIndexError(
                    f"{spec.name} was built with {spec.embedding_model}@{spec.embedding_version}"
                    f" but this process has {embedder.label}; vectors of two models must not "
                    f"share a version: rebuild instead")
            embedded = embedder.embed([c.embed_text for c in missing])
            vectors.update(zip((c.chunk_id for c in missing), embedded, strict=True))
            stats.chunks_embedded += len(missing)
        return vectors


def _row(doc: Document, chunk: Chunk, vector: np.ndarray) -> ChunkRow:
    return ChunkRow(chunk_id=chunk.chunk_id, doc_id=doc.doc_id, position=chunk.position,
                    doc_type=doc.doc_type, language=doc.language, merchant_id=doc.merchant_id,
                    title=doc.title, heading=chunk.heading, source_url=doc.source_url,
                    text=chunk.text, updated_at=doc.updated_at, vector=vector)


@dataclass
class IndexerStatus:
    """What the supervisor reads: written after every batch, atomically."""

    started_at_ms: int
    heartbeat_ms: int = 0
    batches: int = 0
    read: int = 0
    applied: int = 0
    stale: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    chunks_embedded: int = 0
    chunks_reused: int = 0
    truncated: int = 0
    last_applied_updated_at: int | None = None
    last_error: str | None = None
    upkeeps: int = 0                       # index upkeeps run (compaction, index maintenance)
    upkeep_running: str | None = None      # the version whose upkeep is running now
    upkeep_started_ms: int | None = None
    last_upkeep_s: float | None = None

    def add(self, read: int, stats: ApplyStats, rejected: Counter, newest: int | None,
            now_ms: int) -> None:
        self.batches += 1
        self.read += read
        self.applied += stats.applied
        self.stale += stats.stale
        self.chunks_embedded += stats.chunks_embedded
        self.chunks_reused += stats.chunks_reused
        self.truncated += stats.truncated
        for rule, n in rejected.items():
            self.dead_lettered[rule] = self.dead_lettered.get(rule, 0) + n
        if newest is not None:
            self.last_applied_updated_at = max(newest, self.last_applied_updated_at or newest)
        self.heartbeat_ms = now_ms

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        hidden = path.with_name(f".{path.name}.tmp")
        hidden.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        hidden.replace(path)


def status_path(data_dir: Path) -> Path:
    return data_dir / "knowledge" / "indexer-status.json"


def load_status(data_dir: Path) -> dict | None:
    path = status_path(data_dir)
    return orjson.loads(path.read_bytes()) if path.exists() else None


def now_ms() -> int:
    return int(time.time() * 1000)

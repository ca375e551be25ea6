"""The vector-index interface the indexer, the rebuild and the retriever are written against.

An *index version* holds the chunks of every live document embedded by one model with one
chunking spec; its name says so (``knowledge-all-minilm-l6-v2-sections-t200-o32-20261121t101500``,
lower case and dashes only, which OpenSearch index names and file names both accept).
Readers never name a version: they follow an *alias*, which a rebuild swaps atomically and
can swap back in one step (the alias keeps its history).

Each version also keeps a *ledger*: one entry per document ever seen, live or deleted, with
the order key of the version applied and the ids of its chunks. The ledger is what makes
writes safe to repeat: a change is applied only if it is newer than the entry (so replays and
out-of-order updates change nothing), a delete leaves a tombstone (so an older upsert
replayed later cannot bring a document back), and unchanged chunk ids are not re-embedded.

Backends implement the abstract methods; ``mercury.retrieval.factory.open_index`` picks one
from config.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class VectorIndexError(Exception):
    """The index cannot do what was asked; the message says what to fix."""


@dataclass(frozen=True)
class VersionSpec:
    """What a version was built with; stored with it and returned with every search."""

    name: str
    alias: str
    embedding_model: str
    embedding_version: str
    chunking: str
    dimension: int
    created_at_ms: int
    state: str = "building"  # building -> ready (searchable behind the alias) -> retired


def version_name(alias: str, embedding_model: str, chunking: str, created_at_ms: int) -> str:
    stamp = time.strftime("%Y%m%dt%H%M%S", time.gmtime(created_at_ms / 1000))
    return re.sub(r"[^a-z0-9-]+", "-", f"{alias}-{embedding_model}-{chunking}-{stamp}".lower())


@dataclass(frozen=True)
class ChunkRow:
    """A chunk as stored: the filterable fields, the passage, the vector and its model."""

    chunk_id: str
    doc_id: str
    position: int
    doc_type: str
    language: str
    merchant_id: str | None
    title: str
    heading: str
    source_url: str | None
    text: str
    updated_at: int
    vector: np.ndarray


@dataclass(frozen=True)
class LedgerEntry:
    doc_id: str
    order_key: tuple  # Document.order_key() of the version applied
    deleted: bool
    chunk_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchFilter:
    """Exact-match filters; a field left as None does not filter."""

    language: str | None = None
    doc_type: str | None = None
    merchant_id: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("language", self.language), ("doc_type", self.doc_type),
                                  ("merchant_id", self.merchant_id)) if v is not None}


NO_FILTER = SearchFilter()


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    doc_id: str
    title: str
    heading: str
    source_url: str | None
    text: str
    # Higher is closer: the cosine similarity from a kNN search, the reciprocal-rank-fusion
    # score (mercury.retrieval.hybrid) from a hybrid one.
    score: float


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    version: VersionSpec  # the version the alias pointed at when the search ran


@dataclass
class DocumentWrite:
    """One document's new state in one version: its chunks (none for a delete) and ledger."""

    entry: LedgerEntry
    rows: list[ChunkRow] = field(default_factory=list)


class VectorIndex(ABC):
    """Versions, aliases, ledger and filtered kNN over one backend."""

    # ---- versions and aliases --------------------------------------------------------------

    @abstractmethod
    def create_version(self, spec: VersionSpec) -> None:
        """Creates the version's storage; doing it again for the same name does nothing."""

    @abstractmethod
    def versions(self, alias: str) -> list[VersionSpec]:
        """Every version made for the alias, oldest first, with its current state."""

    @abstractmethod
    def set_state(self, name: str, state: str) -> None: ...

    @abstractmethod
    def drop_version(self, name: str) -> None: ...

    @abstractmethod
    def alias_target(self, alias: str) -> str | None: ...

    @abstractmethod
    def swap_alias(self, alias: str, name: str) -> str | None:
        """Points the alias at ``name`` atomically; returns the version it pointed at."""

    @abstractmethod
    def rollback_alias(self, alias: str) -> str:
        """Points the alias back at the version it pointed at before the last swap."""

    # ---- writes ------------------------------------------------------------------------------

    @abstractmethod
    def ledger(self, name: str, doc_ids: list[str]) -> dict[str, LedgerEntry]: ...

    @abstractmethod
    def vectors(self, name: str, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """Stored vectors by chunk id (the ones found), so unchanged chunks are not
        embedded again."""

    @abstractmethod
    def write(self, name: str, writes: list[DocumentWrite]) -> None:
        """Replaces each written document's chunks with the given rows and stores its ledger
        entry. The caller has checked the ledger already; a backend that can also re-check it
        atomically with the write (the local engine, under its writer lock) skips a document
        whose stored entry is as new, closing the race between two writers of one version."""

    def optimize(self, name: str) -> None:  # noqa: B027 - optional hook
        """Brings the version's search structures up to date (e.g. builds the ANN index);
        a rebuild calls it before the version is judged and served."""
        return None

    def maintenance_due(self, name: str, *, overdue: bool = False) -> bool:
        """Whether the writer should run ``run_upkeep`` now: the indexer asks when a poll
        comes back empty, and with ``overdue`` between batches (upkeep put off so long that
        a batch should rather wait for it). Engines that maintain themselves (OpenSearch
        merges segments on its own) never need it."""
        return False

    def run_upkeep(self, name: str) -> dict | None:
        """Compaction and index maintenance, run by the writer in a quiet moment."""
        self.optimize(name)
        return None

    # ---- reads -------------------------------------------------------------------------------

    @abstractmethod
    def search(self, name: str, vector: np.ndarray, k: int,
               filters: SearchFilter = NO_FILTER, text: str | None = None) -> list[Hit]:
        """The top k chunks for the question's ``vector`` under ``filters``. With ``text``
        (the question as asked) a version built with lexical search also matches its words
        full-text and fuses both rankings (``mercury.retrieval.hybrid``); a version built
        before that, or ``text=None``, is searched by kNN alone."""

    @abstractmethod
    def live_documents(self, name: str) -> set[str]:
        """Ids of the documents with at least one chunk in the version."""

    def maintained(self, alias: str) -> list[VersionSpec]:
        """The versions every change must reach: the one serving and any being built."""
        return [v for v in self.versions(alias) if v.state in ("building", "ready")]

    def resolve(self, alias: str) -> VersionSpec:
        target = self.alias_target(alias)
        if target is None:
            raise VectorIndexError(f"alias {alias!r} points at no index version yet; "
                              f"run `mercury knowledge rebuild` first")
        for spec in self.versions(alias):
            if spec.name == target:
                return spec
        raise VectorIndexError(f"alias {alias!r} points at {target!r}, which has no version record")

    def search_alias(self, alias: str, vector: np.ndarray, k: int,
                     filters: SearchFilter = NO_FILTER, text: str | None = None
                     ) -> SearchResult:
        spec = self.resolve(alias)
        return SearchResult(self.search(spec.name, vector, k, filters, text), spec)

    def close(self) -> None:  # noqa: B027 - optional hook
        return None

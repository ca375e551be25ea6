"""Question to top-k chunks: embed, then the filtered hybrid search (kNN and full-text, fused
by rank: ``mercury.retrieval.hybrid``) on the version the alias serves, hits.

Two small caches, because assistants are asked the same things over and over ("why was my
card declined?"):
- question embeddings, per model version, least recently used out: a vector never goes stale;
- whole results, per (serving version, question, filters, k), for ``result_ttl_s`` only, so a
  document change is visible at most that long after the index has it. The serving version is
  part of the key, so an alias swap or rollback is visible as soon as the alias is read again.

Which version the alias serves is itself read at most every ``alias_ttl_s`` (1 s): on
OpenSearch resolving it costs two requests, more than the search.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mercury.retrieval.embedding import Embedder
from mercury.retrieval.index import (
    NO_FILTER,
    Hit,
    SearchFilter,
    VectorIndex,
    VectorIndexError,
    VersionSpec,
)


@dataclass(frozen=True)
class Retrieval:
    hits: list[Hit]
    version: VersionSpec
    embedding_cached: bool
    result_cached: bool


class _Lru(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_fresh(self, key, now: float, ttl: float | None):
        item = self.get(key)
        if item is None or (ttl is not None and now - item[0] > ttl):
            return None
        self.move_to_end(key)
        return item[1]

    def put(self, key, value, now: float) -> None:
        if self.size <= 0:
            return
        self[key] = (now, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class Retriever:
    def __init__(self, index: VectorIndex, alias: str, embedder_for: Callable[[str], Embedder],
                 cache_size: int = 1024, result_ttl_s: float = 10.0, alias_ttl_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.index = index
        self.alias = alias
        self.embedder_for = embedder_for
        self.result_ttl_s = result_ttl_s
        self.alias_ttl_s = alias_ttl_s
        self.clock = clock
        self._serving: tuple[float, VersionSpec] | None = None
        self._embeddings = _Lru(cache_size)
        self._results = _Lru(cache_size)

    def retrieve(self, question: str, k: int = 5, filters: SearchFilter = NO_FILTER
                 ) -> Retrieval:
        question = " ".join(question.split())
        if not question:
            raise ValueError("an empty question retrieves nothing")
        now = self.clock()
        spec = self._resolve(now)
        result_key = (spec.name, question, filters, k)
        hits = self._results.get_fresh(result_key, now, self.result_ttl_s)
        if hits is not None:
            return Retrieval(hits, spec, embedding_cached=True, result_cached=True)
        vector, cached = self._embed(spec, question, now)
        hits = self.index.search(spec.name, vector, k, filters, text=question)
        self._results.put(result_key, hits, now)
        return Retrieval(hits, spec, embedding_cached=cached, result_cached=False)

    def _resolve(self, now: float) -> VersionSpec:
        if self._serving is None or now - self._serving[0] > self.alias_ttl_s:
            self._serving = (now, self.index.resolve(self.alias))
        return self._serving[1]

    def _embed(self, spec: VersionSpec, question: str, now: float) -> tuple[np.ndarray, bool]:
        key = (spec.embedding_model, spec.embedding_version, question)
        vector = self._embeddings.get_fresh(key, now, None)
        if vector is not None:
            return vector, True
        embedder = self.embedder_for(spec.embedding_model)
        if embedder.version != spec.embedding_version:
            raise VectorIndexError(f"{spec.name} needs {spec.embedding_model}@"
                                   f"{spec.embedding_version}, this process has {embedder.label}")
        vector = embedder.embed([question])[0]
        self._embeddings.put(key, vector, now)
        return vector, False

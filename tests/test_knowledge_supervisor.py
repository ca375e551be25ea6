"""The indexer as a supervised process: started in the background, killed with SIGKILL in
the middle of its work, restarted by the supervisor (what the knowledge_indexer DAG does),
and every change ends up indexed exactly once. The hashing model keeps start-up fast."""

from __future__ import annotations

import os
import signal

import pytest

from mercury.retrieval.chunking import ChunkingSpec
from mercury.retrieval.embedding import HashingEmbedder
from mercury.retrieval.rebuild import promote, start_version
from mercury.retrieval.service import wait_until
from mercury.retrieval.supervisor import KnowledgeIndexer, indexer_health
from tests.test_knowledge_indexer import change, write


@pytest.mark.slow
def test_a_killed_indexer_is_restarted_and_loses_nothing(tmp_settings):
    from mercury.retrieval.local_index import LocalVectorIndex

    index = LocalVectorIndex(tmp_settings.retrieval.index)
    spec = start_version(index, "knowledge", HashingEmbedder(), ChunkingSpec(), 1_700_000_000_000)
    promote(index, spec)
    indexer = KnowledgeIndexer(tmp_settings)
    assert not indexer_health(tmp_settings).ok
    try:
        assert indexer.ensure_up().ok
        write(tmp_settings, [change(f"doc-{i}", 100) for i in range(50)])
        assert wait_until(lambda: len(index.live_documents(spec.name)) == 50, timeout_s=60)

        pid, = indexer.pids.alive(indexer.name)
        write(tmp_settings, [change(f"doc-{i}", 200) for i in range(50)])
        os.kill(pid, signal.SIGKILL)  # whatever it was doing, it did not commit it
        assert wait_until(lambda: not indexer_health(tmp_settings).running, timeout_s=10)
        assert not indexer.health().ok

        assert indexer.ensure_up().ok  # the supervisor's restart
        def all_at_200() -> bool:
            ledger = index.ledger(spec.name, [f"doc-{i}" for i in range(50)])
            return len(ledger) == 50 and all(e.order_key[0] == 200 for e in ledger.values())
        assert wait_until(all_at_200, timeout_s=60)
        assert wait_until(lambda: indexer_health(tmp_settings).lag == 0, timeout_s=30)
    finally:
        indexer.stop()
    texts = [h.text for h in index.search(spec.name, HashingEmbedder().embed(["doc"])[0], 500)]
    assert len(texts) == 150  # 50 documents x 3 chunks, no duplicates after the replay
    assert sum("revision 200 of" in t for t in texts) == 50

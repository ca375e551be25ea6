"""The incremental indexer on the real local engine (LanceDB) and the local event log.

The hashing model stands in for MiniLM where vector quality does not matter: what is tested
is which versions of which documents end up searchable, how often things are embedded, and
that nothing is lost or resurrected.
"""

from __future__ import annotations

import random
import time
import uuid

import numpy as np
import orjson
import pytest

from mercury.eventlog import open_producer
from mercury.eventlog.file_log import FileEventReader
from mercury.retrieval.chunking import ChunkingSpec
from mercury.retrieval.embedding import HashingEmbedder
from mercury.retrieval.index import SearchFilter
from mercury.retrieval.indexer import GROUP
from mercury.retrieval.rebuild import promote, start_version
from mercury.retrieval.retriever import Retriever
from mercury.retrieval.service import run_indexer
from tests.conftest import metric_samples

ALIAS = "knowledge"


class CountingEmbedder(HashingEmbedder):
    def __init__(self):
        self.embedded: list[str] = []

    def embed(self, texts):
        if list(texts) != ["warm-up"]:  # the indexer's model load at start is not indexing
            self.embedded += list(texts)
        return super().embed(texts)


def change(doc_id: str, updated_at: int, op: str = "UPSERT", body: str | None = None,
           merchant: str = "m-1", language: str = "en") -> dict:
    return {"change_id": str(uuid.UUID(int=random.getrandbits(128), version=4)),
            "doc_id": doc_id, "op": op, "doc_type": "MERCHANT_HELP",
            "source_url": f"https://help/{doc_id}", "title": f"Help {doc_id}",
            "body": None if op == "DELETE" else (body or _body(doc_id, updated_at)),
            "language": language, "merchant_id": merchant, "updated_at": updated_at,
            "ingest_ts": updated_at}


def _body(doc_id: str, revision: int) -> str:
    return (f"# Help {doc_id}\n\n## About\n\n{doc_id} sells things.\n\n"
            f"## Refunds\n\nRefunds take 3 days.\n\n## Revision\n\nrevision {revision} of "
            f"{doc_id}")


def write(settings, records: list[dict | bytes]) -> None:
    with open_producer(settings, writer_id=f"t{uuid.uuid4().hex[:6]}") as producer:
        for record in records:
            raw = record if isinstance(record, bytes) else orjson.dumps(record)
            producer.send("knowledge_documents", raw)


@pytest.fixture
def served(tmp_settings):
    """A served, empty version with the hashing model; the index and a counting model."""
    from mercury.retrieval.local_index import LocalVectorIndex

    index = LocalVectorIndex(tmp_settings.retrieval.index)
    embedder = CountingEmbedder()
    spec = start_version(index, ALIAS, embedder, ChunkingSpec(200, 32), 1_700_000_000_000)
    promote(index, spec)
    return index, spec, embedder


def run(settings, index, embedder):
    return run_indexer(settings, index=index, embedder_for=lambda _name: embedder)


def texts_of(index, spec, doc_id: str) -> list[str]:
    probe = HashingEmbedder().embed([doc_id])[0]
    hits = index.search(spec.name, probe, 50, SearchFilter(merchant_id="m-1"))
    return sorted(h.text for h in hits if h.doc_id == doc_id)


def test_newest_version_wins_in_any_order_and_replays_change_nothing(tmp_settings, served):
    index, spec, embedder = served
    rng = random.Random(5)
    records = [change(f"doc-{d}", t) for d in range(6) for t in (100, 200, 300)]
    records += [change("doc-0", 400, op="DELETE")]
    records += rng.sample(records, 8)  # producer retries: exact duplicates
    rng.shuffle(records)
    write(tmp_settings, records)

    first = run(tmp_settings, index, embedder)
    assert first.read == len(records)
    for d in range(1, 6):
        texts = texts_of(index, spec, f"doc-{d}")
        assert len(texts) == 3 and f"revision 300 of doc-{d}" in texts
    assert texts_of(index, spec, "doc-0") == []
    assert index.live_documents(spec.name) == {f"doc-{d}" for d in range(1, 6)}

    # The whole stream again, as after a lost offset file: every change is stale now.
    embedded_before = len(embedder.embedded)
    write(tmp_settings, records)
    again = run(tmp_settings, index, embedder)
    assert again.applied == 0 and again.stale > 0
    assert len(embedder.embedded) == embedded_before


def test_a_deleted_document_never_comes_back_after_a_replay_of_older_events(
        tmp_settings, served):
    index, spec, embedder = served
    write(tmp_settings, [change("gone", 100), change("gone", 200, op="DELETE")])
    run(tmp_settings, index, embedder)
    assert texts_of(index, spec, "gone") == []
    # Replayed older upserts, one of them newer than the first but older than the delete.
    write(tmp_settings, [change("gone", 150), change("gone", 100), change("gone", 199)])
    status = run(tmp_settings, index, embedder)
    assert status.stale == 1 and status.applied == 0  # three changes, one document per batch
    assert texts_of(index, spec, "gone") == []
    entry = index.ledger(spec.name, ["gone"])["gone"]
    assert entry.deleted and entry.order_key[0] == 200
    # A genuinely newer upsert does bring it back.
    write(tmp_settings, [change("gone", 201)])
    run(tmp_settings, index, embedder)
    assert "revision 201 of gone" in texts_of(index, spec, "gone")


def test_an_edit_re_embeds_only_the_chunks_it_changed(tmp_settings, served):
    index, spec, embedder = served
    write(tmp_settings, [change("doc", 100)])
    run(tmp_settings, index, embedder)
    assert len(embedder.embedded) == 3  # About, Refunds, Revision
    write(tmp_settings, [change("doc", 200)])
    status = run(tmp_settings, index, embedder)
    assert len(embedder.embedded) == 4 and embedder.embedded[-1].endswith("revision 200 of doc")
    assert status.chunks_reused == 2 and status.chunks_embedded == 1
    assert len(texts_of(index, spec, "doc")) == 3


def test_bad_documents_are_dead_lettered_and_nothing_is_lost(tmp_settings, served):
    index, spec, embedder = served
    good = [change(f"ok-{i}", 100) for i in range(3)]
    bad = [orjson.dumps(change("empty", 100, body="   ")),
           orjson.dumps(change("italian", 100, language="it")),
           orjson.dumps(change("binary", 100))[:-2] + b"\xc3\x28}",
           b"not json at all"]
    huge = change("huge", 100, body="# Huge\n\n" + "\n\n".join(["word " * 40] * 3000))
    write(tmp_settings, good + bad + [huge])
    status = run(tmp_settings, index, embedder)
    assert status.read == 8 and status.applied == 4 and status.truncated == 1
    assert status.dead_lettered == {"empty_body": 1, "unsupported_language": 1, "not_utf8": 1,
                                    "not_json": 1}
    letters = [orjson.loads(m.value) for m in
               FileEventReader(tmp_settings.event_log.root).read("knowledge_documents.dlq")]
    assert sorted(letter["rule"] for letter in letters) == sorted(status.dead_lettered)
    assert all(letter["source_position"].startswith("knowledge_documents/") for letter in letters)
    assert index.live_documents(spec.name) == {"ok-0", "ok-1", "ok-2", "huge"}
    # The same counts for Prometheus (the dead-letter and knowledge-freshness SLIs), with a
    # fresh heartbeat; each applied change's lag observed (updated_at 100 ms: very late).
    samples = metric_samples(tmp_settings.metrics_dir / "knowledge_indexer.prom")
    mine = {("stream", "knowledge_documents"), ("validator", "knowledge_indexer")}
    assert samples[("mercury_stream_records_total", frozenset(mine))] == 8
    assert {dict(labels)["rule"]: value for (name, labels), value in samples.items()
            if name == "mercury_dead_letters_total"} == status.dead_lettered
    assert samples[("mercury_knowledge_searchable_lag_seconds_count", frozenset())] == 4
    assert samples[("mercury_knowledge_searchable_lag_seconds_bucket",
                    frozenset({("le", "300.0")}))] == 0
    beat = samples[("mercury_knowledge_indexer_heartbeat_timestamp_seconds", frozenset())]
    assert abs(beat - time.time()) < 60
    # Offsets were committed: a second run reads nothing and writes no second dead letter.
    assert run(tmp_settings, index, embedder).read == 0
    assert len(list(FileEventReader(tmp_settings.event_log.root)
                    .read("knowledge_documents.dlq"))) == 4
    assert (tmp_settings.event_log.root / "_offsets" / GROUP).is_dir()


def test_a_version_being_built_receives_changes_and_a_retired_one_does_not(tmp_settings,
                                                                          served):
    index, spec, embedder = served
    building = start_version(index, ALIAS, embedder, ChunkingSpec(128, 16), 1_700_000_100_000)
    retired = start_version(index, ALIAS, embedder, ChunkingSpec(64, 8), 1_700_000_200_000)
    index.set_state(retired.name, "retired")
    write(tmp_settings, [change("doc", 100)])
    run(tmp_settings, index, embedder)
    assert index.live_documents(spec.name) == {"doc"}
    assert index.live_documents(building.name) == {"doc"}
    assert index.live_documents(retired.name) == set()


def test_a_process_with_another_model_version_refuses_to_write(tmp_settings, served):
    from mercury.retrieval.index import VectorIndexError

    index, spec, _ = served

    class Retrained(HashingEmbedder):
        @property
        def version(self) -> str:
            return "2"

    write(tmp_settings, [change("doc", 100)])
    with pytest.raises(VectorIndexError, match="must not share a version"):
        run(tmp_settings, index, Retrained())
    assert index.live_documents(spec.name) == set()


def test_retriever_caches_embeddings_and_results_for_a_bounded_time(tmp_settings, served):
    index, spec, embedder = served
    write(tmp_settings, [change("doc", 100)])
    run(tmp_settings, index, embedder)
    now = [0.0]
    retriever = Retriever(index, ALIAS, lambda _n: embedder, result_ttl_s=10,
                          clock=lambda: now[0])
    first = retriever.retrieve("how long do refunds take", k=3)
    assert not first.result_cached and first.version.name == spec.name
    assert first.hits and first.hits[0].doc_id == "doc"
    assert retriever.retrieve("how long do  refunds take ", k=3).result_cached
    now[0] = 11.0  # past the result TTL: searched again, but the question is not re-embedded
    calls = len(embedder.embedded)
    again = retriever.retrieve("how long do refunds take", k=3)
    assert not again.result_cached and again.embedding_cached
    assert len(embedder.embedded) == calls
    assert np.isclose(again.hits[0].score, first.hits[0].score)


def test_a_write_older_than_what_another_writer_stored_meanwhile_is_skipped(tmp_settings,
                                                                           served):
    """Two writers of one version (the indexer and a rebuild) each check the ledger before
    embedding; the engine checks again under its writer lock, so the older one loses."""
    from mercury.retrieval.index import DocumentWrite, LedgerEntry

    index, spec, embedder = served
    write(tmp_settings, [change("doc", 300)])
    run(tmp_settings, index, embedder)
    newest = index.ledger(spec.name, ["doc"])["doc"]
    stale = DocumentWrite(LedgerEntry("doc", (200, 0, "z"), False, ()), rows=[])
    index.write(spec.name, [stale])  # would delete every chunk if it were applied
    assert index.ledger(spec.name, ["doc"])["doc"] == newest
    assert "revision 300 of doc" in texts_of(index, spec, "doc")


def test_a_section_inserted_at_the_top_re_embeds_only_that_section(tmp_settings, served):
    """Ids carry the position, so every later chunk gets a new id; their vectors are reused
    by content hash all the same."""
    index, spec, embedder = served
    write(tmp_settings, [change("doc", 100)])
    run(tmp_settings, index, embedder)
    inserted = _body("doc", 100).replace("## About", "## News\n\nA new section.\n\n## About")
    write(tmp_settings, [change("doc", 200, body=inserted)])
    status = run(tmp_settings, index, embedder)
    assert status.chunks_embedded == 1 and status.chunks_reused == 3
    assert embedder.embedded[-1].endswith("A new section.")
    assert len(texts_of(index, spec, "doc")) == 4


class UpkeepSpy:
    """Wraps the local engine's run_upkeep to record when the indexer calls it: the number
    of writes it folds in (the registry counter just before)."""

    def __init__(self, index):
        self.calls: list[int] = []
        self.index = index
        run_upkeep = index.run_upkeep

        def recorded(name):
            self.calls.append(index.registry.read()["versions"][name]["writes_since_optimize"])
            return run_upkeep(name)

        index.run_upkeep = recorded


def test_the_indexer_runs_the_upkeep_when_a_poll_comes_back_empty(tmp_settings, served):
    """Not between batches while it is merely due: a change never waits for an upkeep that
    could have run in a quiet moment (finding 1 of PERFORMANCE.md)."""
    import threading

    from mercury.retrieval.local_index import LocalVectorIndex
    from mercury.retrieval.service import wait_until

    _, spec, embedder = served
    index = LocalVectorIndex(tmp_settings.retrieval.index.model_copy(
        update={"optimize_every": 3}))
    spy = UpkeepSpy(index)
    stop, statuses = threading.Event(), []
    indexer = threading.Thread(target=lambda: statuses.append(run_indexer(
        tmp_settings, follow=True, stop=stop, index=index, idle_sleep_s=0.05,
        embedder_for=lambda _name: embedder)))
    indexer.start()
    try:
        for i in range(7):  # one change at a time, each awaited: idle polls in between
            write(tmp_settings, [change(f"doc-{i}", 100)])
            assert wait_until(lambda i=i: f"doc-{i}" in index.live_documents(spec.name), 30)
        assert wait_until(lambda: len(spy.calls) >= 2, 30)
    finally:
        stop.set()
        indexer.join(60)
    assert spy.calls == [3, 3]
    assert statuses[0].upkeeps == 2 and statuses[0].applied == 7
    assert index.registry.read()["versions"][spec.name]["writes_since_optimize"] == 1
    chunks = index.db.open_table(f"{spec.name}__chunks")
    # Compacted, plus the one write since. With the full-text indexes Lance's optimize leaves
    # two fragments, not one (measured: two after every later optimize too, never more).
    assert chunks.stats()["fragment_stats"]["num_fragments"] <= 3


def test_a_busy_indexer_runs_an_overdue_upkeep_between_batches(tmp_settings, served):
    """Polls that never come back empty must not put the upkeep off forever: once
    ``overdue_writes`` writes wait, the next batch waits for one upkeep instead."""
    from mercury.retrieval.local_index import LocalVectorIndex

    _, spec, embedder = served
    index = LocalVectorIndex(tmp_settings.retrieval.index.model_copy(
        update={"optimize_every": 2}), overdue_writes=4)
    spy = UpkeepSpy(index)
    write(tmp_settings, [change(f"doc-{i}", 100) for i in range(10)])
    status = run_indexer(tmp_settings, index=index, batch_size=1,
                         embedder_for=lambda _name: embedder)
    # overdue after the 4th and 8th batch; due (not overdue) at the empty poll that ends it
    assert spy.calls == [4, 4, 2] and status.upkeeps == 3 and status.applied == 10
    assert index.live_documents(spec.name) == {f"doc-{i}" for i in range(10)}

"""The LanceDB vector index: versions and aliases, one-commit document replacement, the ledger,
filtered search (flat and ANN), persistence, and reads while another process writes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mercury.config import LocalVectorConfig
from mercury.retrieval.index import (
    ChunkRow,
    DocumentWrite,
    LedgerEntry,
    SearchFilter,
    VectorIndexError,
    VersionSpec,
)
from mercury.retrieval.local_index import LocalVectorIndex

DIM = 16
LANGUAGES = ["en", "de", "fr", "nl"]
DOC_TYPES = ["CARD_POLICY", "FAQ", "MERCHANT", "FEES", "DISPUTE"]


FULL_TEXT_INDEXES = {f"lexical_{lang}": "FTS" for lang in ("en", "fr", "de", "es")}
ENGINE_TUNING = ("rows_per_partition", "reindex_growth", "max_vector_segments",
                 "overdue_writes")


def open_index(path: Path, **settings) -> LocalVectorIndex:
    tuning = {key: settings.pop(key) for key in ENGINE_TUNING if key in settings}
    return LocalVectorIndex(LocalVectorConfig(path=path, **settings), **tuning)


def spec(name: str = "kb-v1", created_at_ms: int = 1_000, dimension: int = DIM,
         alias: str = "kb") -> VersionSpec:
    return VersionSpec(name=name, alias=alias, embedding_model="test-model",
                       embedding_version="1", chunking="t200", dimension=dimension,
                       created_at_ms=created_at_ms)


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def chunk(doc_id: str, chunk_id: str, vector: np.ndarray, *, position: int = 0,
          text: str = "", language: str = "en", doc_type: str = "FAQ",
          merchant_id: str | None = None) -> ChunkRow:
    return ChunkRow(chunk_id=chunk_id, doc_id=doc_id, position=position, doc_type=doc_type,
                    language=language, merchant_id=merchant_id, title=f"title {doc_id}",
                    heading="heading", source_url=None, text=text or chunk_id,
                    updated_at=1_700_000_000_000, vector=vector)


def document(doc_id: str, chunk_ids: list[str], rng: np.random.Generator, *,
             order_key: tuple = (1, 0, "c1"), **fields) -> DocumentWrite:
    vectors = unit(rng.normal(size=(len(chunk_ids), DIM)))
    rows = [chunk(doc_id, cid, vec, position=i, **fields)
            for i, (cid, vec) in enumerate(zip(chunk_ids, vectors, strict=True))]
    return DocumentWrite(LedgerEntry(doc_id, order_key, False, tuple(chunk_ids)), rows)


def tombstone(doc_id: str, order_key: tuple = (9, 1, "c9")) -> DocumentWrite:
    return DocumentWrite(LedgerEntry(doc_id, order_key, True))


def all_chunk_ids(index: LocalVectorIndex, name: str) -> list[str]:
    """Every stored chunk id, with repeats: an exhaustive search returns each row once."""
    return sorted(h.chunk_id for h in index.search(name, unit(np.ones(DIM)), 10_000))


# ---- versions and aliases ----------------------------------------------------------------------

def test_versions_aliases_swap_rollback_and_history(tmp_path):
    index = open_index(tmp_path)
    index.create_version(spec("kb-v2", created_at_ms=2_000))
    index.create_version(spec("kb-v1", created_at_ms=1_000))
    index.create_version(spec("kb-v1", created_at_ms=1_000))  # again: no change
    index.create_version(spec("other-v1", alias="other"))

    assert [v.name for v in index.versions("kb")] == ["kb-v1", "kb-v2"]  # oldest first
    assert index.alias_target("kb") is None
    with pytest.raises(VectorIndexError):
        index.rollback_alias("kb")

    index.set_state("kb-v1", "ready")
    assert [v.state for v in index.versions("kb")] == ["ready", "building"]
    assert index.maintained("kb") == index.versions("kb")

    assert index.swap_alias("kb", "kb-v1") is None
    assert index.swap_alias("kb", "kb-v1") == "kb-v1"  # same target: not a history step
    assert index.swap_alias("kb", "kb-v2") == "kb-v1"
    assert index.resolve("kb").name == "kb-v2"
    assert index.rollback_alias("kb") == "kb-v1"
    assert index.alias_target("kb") == "kb-v1"
    with pytest.raises(VectorIndexError):  # the one step back was used up
        index.rollback_alias("kb")

    with pytest.raises(VectorIndexError):
        index.swap_alias("kb", "other-v1")  # built for another alias
    with pytest.raises(VectorIndexError):
        index.swap_alias("kb", "kb-v9")
    with pytest.raises(VectorIndexError):
        index.create_version(spec("kb-v1", dimension=DIM * 2))

    reopened = open_index(tmp_path)
    assert [v.name for v in reopened.versions("kb")] == ["kb-v1", "kb-v2"]
    assert reopened.alias_target("kb") == "kb-v1"
    assert reopened.versions("kb")[0] == replace(spec("kb-v1"), state="ready")


def test_drop_refuses_the_aliased_version_and_removes_the_rest(tmp_path):
    rng = np.random.default_rng(1)
    index = open_index(tmp_path)
    index.create_version(spec("kb-v1", created_at_ms=1_000))
    index.create_version(spec("kb-v2", created_at_ms=2_000))
    index.write("kb-v2", [document("a", ["a:0"], rng)])
    index.swap_alias("kb", "kb-v2")
    index.swap_alias("kb", "kb-v1")

    with pytest.raises(VectorIndexError, match="points at"):
        index.drop_version("kb-v1")
    assert index.alias_target("kb") == "kb-v1"

    index.drop_version("kb-v2")
    assert [v.name for v in index.versions("kb")] == ["kb-v1"]
    assert not any(p.name.startswith("kb-v2__") for p in tmp_path.iterdir())
    with pytest.raises(VectorIndexError):
        index.write("kb-v2", [document("a", ["a:0"], rng)])
    with pytest.raises(VectorIndexError):
        index.search("kb-v2", unit(np.ones(DIM)), 3)
    with pytest.raises(VectorIndexError):  # the history no longer offers the dropped version
        index.rollback_alias("kb")
    index.drop_version("kb-v2")  # again: nothing left to do


# ---- writes and the ledger ---------------------------------------------------------------------

def test_replacing_a_document_swaps_its_chunks_exactly_once(tmp_path):
    rng = np.random.default_rng(2)
    index = open_index(tmp_path)
    index.create_version(spec())
    quoted = "faq-o'brien"  # the quote must be escaped in the delete filter
    index.write("kb-v1", [document("a", ["a:0", "a:1", "a:2"], rng),
                          document(quoted, [f"{quoted}:0", f"{quoted}:1"], rng)])
    assert all_chunk_ids(index, "kb-v1") == sorted(
        ["a:0", "a:1", "a:2", f"{quoted}:0", f"{quoted}:1"])

    # Fewer chunks, one id kept (updated in place), the others new.
    index.write("kb-v1", [document("a", ["a:0", "a:new"], rng, text="rev2",
                                   order_key=(2, 0, "c2")),
                          document(quoted, [f"{quoted}:x"], rng, order_key=(2, 0, "c3"))])
    # Not newer than the ledger (checked again under the writer lock): skipped, nothing changes.
    index.write("kb-v1", [document("a", ["a:old"], rng, text="stale", order_key=(2, 0, "c1"))])
    assert all_chunk_ids(index, "kb-v1") == sorted(["a:0", "a:new", f"{quoted}:x"])
    hits = index.search("kb-v1", unit(np.ones(DIM)), 100)
    assert {h.text for h in hits if h.doc_id == "a"} == {"rev2"}
    assert index.live_documents("kb-v1") == {"a", quoted}
    assert set(index.vectors("kb-v1", ["a:1", "a:2", "a:new"])) == {"a:new"}

    # The same document twice in one call: the last write wins.
    index.write("kb-v1", [document("a", ["a:p"], rng, order_key=(3, 0, "c4")),
                          document("a", ["a:q"], rng, order_key=(3, 0, "c5"))])
    assert [c for c in all_chunk_ids(index, "kb-v1") if c.startswith("a:")] == ["a:q"]


def test_delete_removes_every_chunk_of_the_document(tmp_path):
    rng = np.random.default_rng(3)
    index = open_index(tmp_path)
    index.create_version(spec())
    index.write("kb-v1", [document("a", ["a:0", "a:1", "a:2"], rng),
                          document("b", ["b:0", "b:1"], rng)])
    index.write("kb-v1", [tombstone("a")])
    assert all_chunk_ids(index, "kb-v1") == ["b:0", "b:1"]
    assert index.live_documents("kb-v1") == {"b"}
    assert index.vectors("kb-v1", ["a:0", "a:1", "a:2"]) == {}

    index.write("kb-v1", [tombstone("b"), tombstone("never-seen")])
    assert all_chunk_ids(index, "kb-v1") == []
    assert index.live_documents("kb-v1") == set()


def test_ledger_round_trip_with_tombstones(tmp_path):
    rng = np.random.default_rng(4)
    index = open_index(tmp_path)
    index.create_version(spec())
    index.write("kb-v1", [document("a", ["a:0", "a:1"], rng, order_key=(1_700, 0, "chg-1")),
                          document("b", ["b:0"], rng, order_key=(1_700, 0, "chg-2"))])
    index.write("kb-v1", [tombstone("b", order_key=(1_800, 1, "chg-3"))])

    ledger = index.ledger("kb-v1", ["a", "b", "unknown"])
    assert ledger == {
        "a": LedgerEntry("a", (1_700, 0, "chg-1"), False, ("a:0", "a:1")),
        "b": LedgerEntry("b", (1_800, 1, "chg-3"), True, ()),
    }
    assert isinstance(ledger["a"].order_key, tuple)
    assert ledger["a"].order_key < (1_700, 0, "chg-2") < ledger["b"].order_key
    assert index.ledger("kb-v1", []) == {}

    stored = index.vectors("kb-v1", ["a:0", "a:1", "missing"])
    assert set(stored) == {"a:0", "a:1"}
    assert stored["a:0"].dtype == np.float32 and stored["a:0"].shape == (DIM,)
    assert np.allclose(np.linalg.norm(stored["a:0"]), 1.0, atol=1e-5)


# ---- search ------------------------------------------------------------------------------------

def labelled_corpus(index: LocalVectorIndex, name: str, rng: np.random.Generator, docs: int):
    """Three chunks per document, with random language, doc type and (sometimes) merchant."""
    rows: dict[str, tuple[str, str, str | None]] = {}
    writes = []
    for d in range(docs):
        language = LANGUAGES[rng.integers(len(LANGUAGES))]
        doc_type = DOC_TYPES[rng.integers(len(DOC_TYPES))]
        merchant = None if d % 3 == 0 else f"m{d % 7}"
        ids = [f"d{d}:{i}" for i in range(3)]
        writes.append(document(f"d{d}", ids, rng, language=language, doc_type=doc_type,
                               merchant_id=merchant))
        rows.update({cid: (language, doc_type, merchant) for cid in ids})
    for start in range(0, len(writes), 50):
        index.write(name, writes[start:start + 50])
    return rows


def assert_filters_hold(index, name, rows, rng, k=20):
    filters = [SearchFilter(language="de"), SearchFilter(doc_type="FEES"),
               SearchFilter(merchant_id="m3"), SearchFilter(language="en", doc_type="FAQ"),
               SearchFilter(language="fr", doc_type="CARD_POLICY", merchant_id="m1"),
               SearchFilter(merchant_id="nobody")]
    for search_filter in filters:
        wanted = search_filter.as_dict()
        matching = [cid for cid, (language, doc_type, merchant) in rows.items()
                    if all({"language": language, "doc_type": doc_type,
                            "merchant_id": merchant}[f] == v for f, v in wanted.items())]
        for _ in range(5):
            hits = index.search(name, unit(rng.normal(size=DIM)), k, search_filter)
            assert all(h.chunk_id in matching for h in hits), search_filter
            # Prefiltered: a narrow filter still fills k when enough rows match.
            assert len(hits) == min(k, len(matching)), search_filter
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filters_never_return_a_non_matching_row_flat_and_with_ann(tmp_path):
    rng = np.random.default_rng(5)
    index = open_index(tmp_path, ann_min_rows=600, optimize_every=4)
    index.create_version(spec())
    rows = labelled_corpus(index, "kb-v1", rng, docs=150)  # 450 rows, 3 writes
    chunks = index.db.open_table("kb-v1__chunks")
    # Below ann_min_rows: exact kNN; the full-text indexes exist from the version's creation.
    assert {i.columns[0]: i.index_type for i in chunks.list_indices()} == FULL_TEXT_INDEXES
    assert_filters_hold(index, "kb-v1", rows, rng)

    more = {f"e{i}:0": ("de", "FEES", "m3") for i in range(200)}
    index.write("kb-v1", [document(f"e{i}", [f"e{i}:0"], rng, language="de",
                                   doc_type="FEES", merchant_id="m3") for i in range(200)])
    rows.update(more)  # 650 rows, 4th write: the upkeep is due and builds the indexes
    assert len(chunks.list_indices()) == 4 and index.maintenance_due("kb-v1")
    index.run_upkeep("kb-v1")  # what the indexer does when a poll comes back empty
    assert not index.maintenance_due("kb-v1")
    indexed = {i.columns[0]: i.index_type for i in chunks.list_indices()}
    assert indexed == {"vector": "IvfHnswSq", "language": "Bitmap", "doc_type": "Bitmap",
                       "merchant_id": "Bitmap", "doc_id": "BTree", "chunk_id": "BTree",
                       **FULL_TEXT_INDEXES}
    assert_filters_hold(index, "kb-v1", rows, rng)


def test_k_of_34_and_more_on_a_version_with_its_ann_index(tmp_path):
    """Lance wants ef >= k * refine_factor: with ef = max(100, 2k) every k >= 34 raised."""
    rng = np.random.default_rng(15)
    index = open_index(tmp_path, ann_min_rows=100)
    index.create_version(spec())
    rows = labelled_corpus(index, "kb-v1", rng, docs=150)  # 450 rows
    index.optimize("kb-v1")
    assert "IvfHnswSq" in {i.index_type for i in index.db.open_table("kb-v1__chunks")
                           .list_indices()}
    for k in (33, 34, 50, 120):
        hits = index.search("kb-v1", unit(rng.normal(size=DIM)), k)
        assert len(hits) == k and len({h.chunk_id for h in hits}) == k
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert_filters_hold(index, "kb-v1", rows, rng, k=40)


def upkeep_table(index: LocalVectorIndex, name: str) -> dict:
    table = index.db.open_table(f"{name}__chunks")
    vector = table.index_stats("vector_idx")
    return {"fragments": table.stats()["fragment_stats"]["num_fragments"],
            "unindexed": vector.num_unindexed_rows if vector else None}


def test_upkeep_converges_while_writes_keep_arriving(tmp_path):
    """The upkeep holds the writer lock, so a write cannot preempt its commit: it waits at
    most one upkeep instead (finding 1 of PERFORMANCE.md). Lance keeps one vector-index delta
    per upkeep and compacts no fragments across them; past ``max_vector_segments`` the index
    is built again, so fragments stay bounded (finding 7)."""
    rng = np.random.default_rng(16)
    index = open_index(tmp_path, ann_min_rows=100, optimize_every=5, max_vector_segments=3)
    index.create_version(spec())
    labelled_corpus(index, "kb-v1", rng, docs=100)  # 300 rows in 2 writes
    index.optimize("kb-v1")
    assert upkeep_table(index, "kb-v1") == {"fragments": 1, "unindexed": 0}
    assert not index.maintenance_due("kb-v1")

    stop, written, errors = threading.Event(), [], []

    def keep_writing():  # single-document replacements, as the indexer writes a trickle
        own = np.random.default_rng(17)
        while not stop.is_set():
            d = int(own.integers(100))
            try:
                index.write("kb-v1", [document(f"d{d}", [f"d{d}:{len(written)}"], own,
                                               order_key=(2 + len(written), 0, "c"))])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return
            written.append(d)

    def wait_for_writes(n: int) -> None:
        deadline = time.monotonic() + 60
        while len(written) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    reports = []
    try:
        for _ in range(8):  # each upkeep commits although writes keep arriving
            wait_for_writes(len(written) + 6)
            assert index.maintenance_due("kb-v1")
            reports.append(index.run_upkeep("kb-v1"))
    finally:
        stop.set()
        writer.join(30)
    assert not errors and len(written) >= 48
    for report in reports:
        assert report["fragments_after"] < report["fragments_before"], reports
        assert report["unindexed_rows"] == 0, reports
        assert report["fragments_after"] <= 4, reports  # 1 + max_vector_segments
    assert sum(r["vector_index_built"] is not None for r in reports) >= 2, reports
    assert index.live_documents("kb-v1") == {f"d{d}" for d in range(100)}


def test_a_search_returns_and_a_write_waits_while_upkeep_runs(tmp_path, monkeypatch):
    rng = np.random.default_rng(18)
    index = open_index(tmp_path, ann_min_rows=100, optimize_every=2)
    index.create_version(spec())
    labelled_corpus(index, "kb-v1", rng, docs=60)
    index.write("kb-v1", [document("late", ["late:0"], rng)])
    assert index.maintenance_due("kb-v1")

    started, proceed = threading.Event(), threading.Event()
    compact = index._optimize_now

    def held_open(name):  # pauses the upkeep after it has taken the writer lock
        started.set()
        assert proceed.wait(30)
        return compact(name)

    monkeypatch.setattr(index, "_optimize_now", held_open)
    upkeep = threading.Thread(target=index.run_upkeep, args=("kb-v1",))
    upkeep.start()
    assert started.wait(30)
    second = open_index(tmp_path)  # another process's view: the indexer and a rebuild
    write_done = threading.Event()
    writer = threading.Thread(target=lambda: (
        second.write("kb-v1", [document("waits", ["waits:0"], np.random.default_rng(1))]),
        write_done.set()))
    writer.start()
    hits = index.search("kb-v1", unit(rng.normal(size=DIM)), 5, SearchFilter(language="en"))
    assert len(hits) == 5
    assert not write_done.wait(0.5)  # behind the writer lock
    proceed.set()
    upkeep.join(60)
    writer.join(60)
    assert write_done.is_set()
    assert {"late", "waits"} <= index.live_documents("kb-v1")
    assert index.registry.read()["versions"]["kb-v1"]["writes_since_optimize"] == 1


def test_the_vector_index_is_rebuilt_when_the_version_outgrows_it(tmp_path):
    """Partitions are sized for the rows at the first build; at 4x those rows the index is
    built again with partitions for the new size (finding 6)."""
    rng = np.random.default_rng(19)
    index = open_index(tmp_path, ann_min_rows=100, rows_per_partition=50, reindex_growth=4.0)
    index.create_version(spec())

    def grow_to(docs: int) -> tuple[str | None, dict]:  # the first documents are replaced
        index.write("kb-v1", [document(f"g{d}", [f"g{d}:0", f"g{d}:1"], rng,
                                       order_key=(docs, 0, "c")) for d in range(docs)])
        built = index.run_upkeep("kb-v1")["vector_index_built"]
        record = index.registry.read()["versions"]["kb-v1"]
        return built, {"rows": record["ann_rows"], "partitions": record["ann_partitions"]}

    assert grow_to(60) == ("first build", {"rows": 120, "partitions": 2})
    assert grow_to(240) == (None, {"rows": 120, "partitions": 2})  # 480 rows: not past 4x
    built, record = grow_to(250)  # 500 rows > 4 x 120
    assert built.startswith("outgrown") and record == {"rows": 500, "partitions": 10}
    assert upkeep_table(index, "kb-v1")["unindexed"] == 0
    assert grow_to(260)[0] is None  # 520 rows: fits the new build
    hits = index.search("kb-v1", unit(rng.normal(size=DIM)), 40)
    assert len(hits) == 40


def clustered(rng: np.random.Generator, n: int, dim: int, centroids: np.ndarray) -> np.ndarray:
    """Unit vectors near random centroids: neighbourhoods an ANN index can find, unlike
    uniform random vectors, which are all about equally far apart."""
    picks = centroids[rng.integers(len(centroids), size=n)]
    return unit(picks + rng.normal(size=(n, dim)) * (0.5 / np.sqrt(dim)))


def test_recall_at_5_with_filters_on_the_ann_index(tmp_path):
    rng = np.random.default_rng(6)
    dim, docs = 384, 10_000  # 30K chunks
    centroids = unit(rng.normal(size=(200, dim)))
    vectors = clustered(rng, docs * 3, dim, centroids)
    languages = np.array(LANGUAGES)[rng.integers(len(LANGUAGES), size=docs * 3)]
    doc_types = np.array(DOC_TYPES)[rng.integers(len(DOC_TYPES), size=docs * 3)]
    index = open_index(tmp_path, ann_min_rows=10_000, optimize_every=1_000)
    index.create_version(spec(dimension=dim))
    writes = [DocumentWrite(LedgerEntry(f"d{d}", (1, 0, "c"), False),
                            [chunk(f"d{d}", f"c{r}", vectors[r], position=r - 3 * d,
                                   language=languages[r], doc_type=doc_types[r])
                             for r in range(3 * d, 3 * d + 3)])
              for d in range(docs)]
    for start in range(0, docs, 2_000):
        index.write("kb-v1", writes[start:start + 2_000])
    index.optimize("kb-v1")
    assert "IvfHnswSq" in {i.index_type for i in index.db.open_table("kb-v1__chunks")
                           .list_indices()}

    queries = clustered(rng, 60, dim, centroids)
    for search_filter, mask in [
            (SearchFilter(), np.ones(docs * 3, bool)),
            (SearchFilter(language="de"), languages == "de"),
            (SearchFilter(language="de", doc_type="CARD_POLICY"),
             (languages == "de") & (doc_types == "CARD_POLICY"))]:
        candidates = np.flatnonzero(mask)
        found = 0
        for query in queries:
            exact = candidates[np.argsort(-(vectors[candidates] @ query))[:5]]
            hits = index.search("kb-v1", query, 5, search_filter)
            found += len({f"c{r}" for r in exact} & {h.chunk_id for h in hits})
            for hit in hits:  # the score is the cosine similarity of the stored vector
                row = int(hit.chunk_id[1:])
                assert hit.score == pytest.approx(float(vectors[row] @ query), abs=1e-3)
        recall = found / (5 * len(queries))
        assert recall >= 0.95, (search_filter, recall)


def test_a_reopened_index_returns_the_same_results(tmp_path):
    rng = np.random.default_rng(7)
    index = open_index(tmp_path)
    index.create_version(spec())
    rows = labelled_corpus(index, "kb-v1", rng, docs=40)
    index.write("kb-v1", [tombstone("d3")])
    index.swap_alias("kb", "kb-v1")
    queries = unit(rng.normal(size=(5, DIM)))
    before = [index.search_alias("kb", q, 7, SearchFilter(language="en")) for q in queries]
    ledger_before = index.ledger("kb-v1", ["d1", "d3"])
    index.close()

    reopened = open_index(tmp_path)
    after = [reopened.search_alias("kb", q, 7, SearchFilter(language="en")) for q in queries]
    assert after == before
    assert reopened.ledger("kb-v1", ["d1", "d3"]) == ledger_before
    assert reopened.live_documents("kb-v1") == {cid.split(":")[0] for cid in rows} - {"d3"}


# ---- several processes -------------------------------------------------------------------------

CONCURRENT_DOCS = 8
CONCURRENT_ROUNDS = 120


def revision_write(doc: int, revision: int) -> DocumentWrite:
    """Three chunks whose ids alternate between revisions, so every replacement deletes three
    rows and inserts three: a torn read would show six chunks or none."""
    rng = np.random.default_rng(doc * 100_000 + revision)
    ids = [f"doc{doc}:{revision % 2}:{part}" for part in range(3)]
    rows = [chunk(f"doc{doc}", cid, vec, position=part, text=f"rev {revision} part {part}",
                  merchant_id=f"m{doc}")
            for part, (cid, vec) in enumerate(zip(ids, unit(rng.normal(size=(3, DIM))),
                                                  strict=True))]
    return DocumentWrite(LedgerEntry(f"doc{doc}", (revision, 0, "c"), False, tuple(ids)), rows)


def replace_documents(path: str, rounds: int) -> None:
    """The writer process: keeps replacing documents, two per write, and runs the upkeep
    when it is due, as the indexer does when a poll comes back empty."""
    index = open_index(Path(path), optimize_every=10)
    rng = np.random.default_rng(8)
    for revision in range(1, rounds + 1):
        docs = rng.choice(CONCURRENT_DOCS, size=2, replace=False)
        index.write("kb-v1", [revision_write(int(d), revision) for d in docs])
        if index.maintenance_due("kb-v1"):
            index.run_upkeep("kb-v1")
    index.close()


def test_readers_never_see_a_half_replaced_document_while_another_process_writes(tmp_path):
    """Also checks the registry lock: this process adds versions while every write of the
    other one counts itself in the same registry file; neither may lose the other's update."""
    index = open_index(tmp_path)
    index.create_version(spec())
    index.write("kb-v1", [revision_write(d, 0) for d in range(CONCURRENT_DOCS)])
    writer = multiprocessing.get_context("spawn").Process(
        target=replace_documents, args=(str(tmp_path), CONCURRENT_ROUNDS))
    writer.start()
    rng = np.random.default_rng(9)
    searches, seen = 0, set()
    deadline = time.monotonic() + 120
    while writer.is_alive() and time.monotonic() < deadline:
        query = unit(rng.normal(size=DIM))
        doc = int(rng.integers(CONCURRENT_DOCS))
        one_doc = index.search("kb-v1", query, 10, SearchFilter(merchant_id=f"m{doc}"))
        revisions = {h.text.split()[1] for h in one_doc}
        assert len(one_doc) == 3 and len(revisions) == 1, [h.chunk_id for h in one_doc]
        assert sorted(h.text.split()[3] for h in one_doc) == ["0", "1", "2"]
        everything = index.search("kb-v1", query, 100)
        assert len(everything) == 3 * CONCURRENT_DOCS
        for d in range(CONCURRENT_DOCS):
            assert len({h.text.split()[1] for h in everything if h.doc_id == f"doc{d}"}) == 1
        if searches < 30:
            index.create_version(spec(f"kb-extra-{searches}", created_at_ms=10_000 + searches))
        searches += 1
        seen |= {(h.doc_id, h.text.split()[1]) for h in everything}
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert searches >= 20 and len(seen) > 2 * CONCURRENT_DOCS, (searches, len(seen))
    final = index.search("kb-v1", unit(np.ones(DIM)), 100)
    assert len(final) == 3 * CONCURRENT_DOCS

    extra = {v.name for v in index.versions("kb")} - {"kb-v1"}
    assert extra == {f"kb-extra-{i}" for i in range(min(searches, 30))}
    # 1 + CONCURRENT_ROUNDS writes counted, an upkeep (and a reset) after every 10th.
    record = index.registry.read()["versions"]["kb-v1"]
    assert record["writes_since_optimize"] == (1 + CONCURRENT_ROUNDS) % 10

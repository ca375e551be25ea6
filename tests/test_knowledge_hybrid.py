"""Hybrid retrieval on the local engine: reciprocal rank fusion on literal rankings, a match
only the words find, the language analysers, filters on the full-text side, and versions made
before hybrid search (kNN only, still written and searched)."""

from __future__ import annotations

import numpy as np
import pytest

from mercury.retrieval import hybrid
from mercury.retrieval.index import DocumentWrite, LedgerEntry, SearchFilter
from mercury.retrieval.retriever import Retriever
from tests.test_local_index import DIM, chunk, open_index, spec, unit

# ---- reciprocal rank fusion --------------------------------------------------------------------

def test_rrf_orders_a_literal_example_by_summed_reciprocal_ranks():
    by_meaning = ["a", "b", "c", "d"]
    by_words = ["c", "e", "a"]
    fused = hybrid.fuse([by_meaning, by_words], k=5)
    # a: 1/61 + 1/63, c: 1/63 + 1/61 (a tie, a has the better single rank in the first
    # ranking, kNN), b: 1/62, e: 1/62 (tie: same rank, kNN's ranking first), d: 1/64.
    assert [item for item, _ in fused] == ["a", "c", "b", "e", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    assert fused[2][1] == pytest.approx(1 / 62) and fused[4][1] == pytest.approx(1 / 64)
    # Found by both beats first in only one: what lets words and meaning back each other up.
    assert hybrid.fuse([["x", "y"], ["y", "z"]], k=1) == [("y", pytest.approx(1 / 62 + 1 / 61))]
    assert [i for i, _ in hybrid.fuse([by_meaning, by_words], k=2)] == ["a", "c"]
    assert hybrid.RRF_K == 60
    # One chunk per document: b's second chunk b2 (1/62 + 1/61) would beat every other.
    chunks = hybrid.fuse([["a1", "b1", "b2"], ["b2", "c1"]], k=3,
                         group_of={"a1": "a", "b1": "b", "b2": "b", "c1": "c"})
    assert [item for item, _ in chunks] == ["b2", "a1", "c1"]


def test_the_full_text_fields_follow_the_language_filter():
    assert hybrid.lexical_fields_for(SearchFilter()) == (
        "lexical_en", "lexical_fr", "lexical_de", "lexical_es")
    assert hybrid.lexical_fields_for(SearchFilter(language="de")) == ("lexical_de",)
    assert hybrid.lexical_fields_for(SearchFilter(language="nl")) == ()  # kNN only
    assert hybrid.depth(5) == 20 and hybrid.depth(50) == 50


# ---- the local engine --------------------------------------------------------------------------

QUERY = unit(np.eye(DIM)[0])


def passage(doc_id: str, text: str, direction: int, language: str = "en",
            doc_type: str = "MERCHANT_HELP", lean: float = 0.0) -> DocumentWrite:
    """A one-chunk document whose vector is ``direction`` tilted towards the query by
    ``lean``: the kNN ranking is set by ``lean``, the words by ``text``."""
    vector = unit(np.eye(DIM)[direction] + lean * np.eye(DIM)[0])
    row = chunk(doc_id, f"{doc_id}:0", vector, text=text, language=language,
                doc_type=doc_type)
    return DocumentWrite(LedgerEntry(doc_id, (1, 0, "c"), False, (row.chunk_id,)), [row])


@pytest.fixture
def corpus(tmp_path):
    """Six passages nearer the query vector than the one whose words answer it."""
    index = open_index(tmp_path)
    index.create_version(spec())
    near = [passage(f"near{i}", "Fees, if any, are shown before you confirm.", i + 1,
                    lean=2.0 - 0.1 * i) for i in range(6)]
    index.write("kb-v1", [
        *near,
        passage("maple", "Charges appear as MAPLE OAK BISTRO and settle within 3 business "
                         "days.", 8, lean=0.0),
        passage("refus", "Un paiement peut être refusé pour plusieurs raisons.", 9,
                language="fr", doc_type="CARD_POLICY", lean=0.0),
        passage("abgelehnt", "Eine Zahlung kann aus mehreren Gründen abgelehnt werden.", 10,
                language="de", doc_type="CARD_POLICY", lean=0.0),
    ])
    yield index
    index.close()


def docs(hits) -> list[str]:
    return [h.doc_id for h in hits]


def test_hybrid_finds_a_passage_only_its_words_match(corpus):
    question = "when does my Maple Oak Bistro charge settle?"
    by_meaning = docs(corpus.search("kb-v1", QUERY, 5))
    assert "maple" not in by_meaning and by_meaning[0] == "near0"  # kNN alone misses it
    hits = corpus.search("kb-v1", QUERY, 5, text=question)
    # First by words, 7th to 9th by meaning (depth 20 holds all nine): fused, it beats the
    # kNN favourite, which only one ranking holds (1/61).
    assert docs(hits)[:2] == ["maple", "near0"], docs(hits)
    assert 1 / 61 + 1 / 69 <= hits[0].score <= 1 / 61 + 1 / 67
    assert hits[1].score == pytest.approx(1 / 61)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # text=None is the kNN search exactly as before (cosine scores).
    assert docs(corpus.search("kb-v1", QUERY, 5, text=None)) == by_meaning


def test_each_language_is_stemmed_and_folded_by_its_own_analyser(corpus):
    # "refusées" (plural, accented) reaches "refusé" only through French stemming and
    # folding; "abgelehnte" reaches "abgelehnt" through German stemming.
    assert "refus" in docs(corpus.search("kb-v1", QUERY, 3, text="paiements refusees"))[:1]
    assert "abgelehnt" in docs(corpus.search("kb-v1", QUERY, 3, text="abgelehnte Zahlungen"))[:1]
    # Stop words alone match nothing: the kNN ranking is returned unchanged.
    assert docs(corpus.search("kb-v1", QUERY, 3, text="pour les de la")) == docs(
        corpus.search("kb-v1", QUERY, 3))


def test_filters_apply_to_the_full_text_side_too(corpus):
    question = "paiement refusé chez MAPLE OAK BISTRO"
    hits = corpus.search("kb-v1", QUERY, 5, SearchFilter(language="en"), text=question)
    assert "refus" not in docs(hits) and "maple" in docs(hits)
    hits = corpus.search("kb-v1", QUERY, 5, SearchFilter(doc_type="CARD_POLICY"), text=question)
    assert set(docs(hits)) == {"refus", "abgelehnt"} and docs(hits)[0] == "refus"


def test_the_retriever_searches_with_the_question_words(corpus):
    class Fixed:
        name, version, label = "test-model", "1", "test-model@1"

        def embed(self, texts):
            return np.stack([QUERY for _ in texts])

    corpus.swap_alias("kb", "kb-v1")
    retriever = Retriever(corpus, "kb", lambda _name: Fixed())
    assert docs(retriever.retrieve("Maple Oak Bistro settlement", k=3).hits)[0] == "maple"


def test_a_version_made_before_hybrid_search_is_written_and_searched_by_knn(tmp_path):
    from mercury.retrieval.local_index import chunk_schema, chunks_table_name

    index = open_index(tmp_path)
    index.create_version(spec())
    # As an older release created it: no full-text columns, no full-text indexes.
    index.db.create_table(chunks_table_name("kb-v1"), schema=chunk_schema(DIM, lexical=False),
                          mode="overwrite")
    index.write("kb-v1", [passage("near0", "fees", 1, lean=2.0),
                          passage("maple", "MAPLE OAK BISTRO", 8)])
    assert docs(index.search("kb-v1", QUERY, 2, text="Maple Oak Bistro")) == ["near0", "maple"]
    hits = index.search("kb-v1", QUERY, 1, text="Maple Oak Bistro")
    assert hits[0].score == pytest.approx(float(unit(np.eye(DIM)[1] + 2 * np.eye(DIM)[0])[0]))

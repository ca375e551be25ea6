"""Document rules and chunking: bad documents get a named rule, chunks follow structure, fit
the model, overlap, and keep their ids when their text does not change."""

from __future__ import annotations

import random

import orjson
import pytest

from mercury.generator.documents import build_documents, render
from mercury.retrieval.chunking import (
    SPECIAL_TOKENS,
    ChunkingSpec,
    chunk_document,
    split_sections,
    wordpiece_counter,
)
from mercury.retrieval.documents import Document, Rejected, parse_change

LANGS = ("en", "fr", "de", "es")


def change(**overrides) -> dict:
    record = {"change_id": "4b1d0c8e-6f0a-4c1e-9a43-0d6f3e2b1a55", "doc_id": "policy-x-en",
              "op": "UPSERT", "doc_type": "CARD_POLICY", "source_url": "https://h/x",
              "title": "Fees", "body": "# Fees\n\n## Abroad\n\nConverted daily.",
              "language": "en", "merchant_id": None, "updated_at": 1_000, "ingest_ts": 1_001}
    return {**record, **overrides}


def parse(record: dict | bytes, max_body_chars: int = 100_000):
    raw = record if isinstance(record, bytes) else orjson.dumps(record)
    return parse_change(raw, LANGS, max_body_chars)


@pytest.mark.parametrize(("raw", "rule"), [
    (orjson.dumps(change())[:-1] + b"\xff}", "not_utf8"),
    (orjson.dumps(change(body="  \n ")), "empty_body"),
    (orjson.dumps(change(body=None)), "empty_body"),
    (orjson.dumps(change(language="it")), "unsupported_language"),
    (orjson.dumps(change(language="xx")), "bad_language"),
    (orjson.dumps(change(op="MERGE")), "unknown_enum"),
    (b'{"doc_id": "a"', "not_json"),
])
def test_bad_documents_are_rejected_with_a_named_rule(raw, rule):
    parsed = parse(raw)
    assert isinstance(parsed, Rejected) and parsed.verdict.rule == rule, parsed


def test_a_delete_needs_no_body_and_is_a_tombstone():
    doc = parse(change(op="DELETE", body=None, title=None))
    assert isinstance(doc, Document) and doc.deleted and doc.body == ""
    assert chunk_document(doc, ChunkingSpec()) == []


def test_an_enormous_body_is_cut_at_a_paragraph_break_and_marked():
    paragraphs = [f"Paragraph {i} " + "word " * 50 for i in range(200)]
    doc = parse(change(body="\n\n".join(paragraphs)), max_body_chars=5_000)
    assert isinstance(doc, Document) and doc.truncated
    assert len(doc.body) <= 5_000 and doc.body.endswith("word")
    assert doc.body.count("Paragraph") == len(doc.body.split("\n\n"))  # whole paragraphs only
    assert not parse(change()).truncated


def test_tie_on_updated_at_is_broken_the_same_way_in_any_order():
    upsert = parse(change())
    delete = parse(change(op="DELETE", body=None,
                          change_id="00000000-0000-4000-8000-000000000000"))
    assert max(upsert, delete, key=Document.order_key) is delete
    assert max(delete, upsert, key=Document.order_key) is delete


def test_sections_follow_headings():
    body = ("intro line\n\n# T\n\n## A\n\npara one\nstill one\n\npara two\n\n"
            "### A1\n\ndeep\n\n## B\n\nb")
    assert split_sections(body) == [
        ((), ["intro line"]),
        (("T", "A"), ["para one still one", "para two"]),
        (("T", "A", "A1"), ["deep"]),
        (("T", "B"), ["b"]),
    ]


def _doc(body: str, title: str = "Card policy", doc_id: str = "d1") -> Document:
    return Document(doc_id, "c", False, 1, "CARD_POLICY", "en", title, body)


def test_chunks_fit_the_model_and_overlap_within_a_section():
    count = wordpiece_counter()
    sentences = [f"Rule {i} says the limit for purchases of kind {i} is {i * 10} euros."
                 for i in range(60)]
    spec = ChunkingSpec(max_tokens=64, overlap_tokens=16)
    chunks = chunk_document(_doc("# Card policy\n\n## Limits\n\n" + " ".join(sentences)), spec)
    assert len(chunks) > 5
    for chunk in chunks:
        assert count([chunk.embed_text])[0] + SPECIAL_TOKENS <= spec.max_tokens
        assert chunk.embed_text.startswith("Card policy > Limits\n")
    for before, after in zip(chunks, chunks[1:], strict=False):
        last_sentence = before.text.rsplit(". ", 1)[-1]
        assert after.text.startswith(last_sentence.rstrip(".")), (before.text, after.text)
    covered = " ".join(c.text for c in chunks)
    assert all(s in covered for s in sentences)  # nothing lost


def test_a_chunk_never_spans_two_sections():
    chunks = chunk_document(_doc("# Card policy\n\n## A\n\nalpha\n\n## B\n\nbeta"), ChunkingSpec())
    assert [(c.heading, c.text) for c in chunks] == [("A", "alpha"), ("B", "beta")]


def test_an_edit_changes_only_the_ids_of_the_chunks_it_touches():
    doc_spec = build_documents(random.Random(3), (), 1)[0]  # the declines policy: ten sections
    v1 = chunk_document(_doc(render(doc_spec, 1), doc_spec.title), ChunkingSpec())
    v2 = chunk_document(_doc(render(doc_spec, 2), doc_spec.title), ChunkingSpec())
    changed = {c.chunk_id for c in v2} - {c.chunk_id for c in v1}
    assert len(v1) == len(v2) >= 10
    assert len(changed) == 1 and next(iter(changed)).startswith(f"d1:{len(v2) - 1}:")
    other = chunk_document(_doc(render(doc_spec, 1), doc_spec.title), ChunkingSpec(128, 16))
    assert {c.chunk_id for c in other}.isdisjoint({c.chunk_id for c in v1})  # spec in the hash


def test_a_giant_title_or_word_does_not_crash_chunking():
    chunks = chunk_document(_doc("## H\n\n" + "x" * 5_000 + " tail.", title="T " * 400),
                            ChunkingSpec(64, 8))
    assert chunks and chunks[-1].text.endswith("tail.")

"""Hybrid retrieval: what both engines share when a question is matched by meaning and by words.

A version built with lexical search stores each chunk's words once more, in a column (local)
or field (OpenSearch) named for the chunk's language, ``lexical_<language>``, analysed by that
language's stemmer and stop words. The engine runs the kNN search and a full-text search over
those fields, each for ``depth(k)`` candidates under the same filters, and ``fuse`` merges the
two rankings by reciprocal rank fusion (RRF).

Why RRF: cosine similarities and BM25 scores are on unrelated scales (BM25 grows with the
question's length and the corpus), so adding them needs a weight tuned per corpus. RRF uses
ranks only: score(d) = sum over the rankings r that hold d of 1 / (RRF_K + rank_r(d)).

Why RRF_K = 60: the constant of Cormack, Clarke and Buettcher (SIGIR 2009), which OpenSearch's
and LanceDB's own RRF also default to. It damps the head: rank 1 is worth 1/61 and rank 5
1/65, so a chunk that both searches place in their top few beats one that only one search
puts first, which is what lets a merchant's name (found by words) and a paraphrase (found by
meaning) help each other instead of one overruling the other.

One chunk per document: the hybrid result holds the best chunk of each of k documents. The
chunks of one long policy (the decline reasons are ten sections) otherwise fill the top k and
push out the document a question was really about; measured on the labelled questions this
is worth more than any fusion setting (docs/PERFORMANCE.md, "Hybrid retrieval").

Documents whose language has no analyser here are still found by the kNN search; they are
simply absent from the full-text side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mercury.retrieval.index import ChunkRow, SearchFilter

RRF_K = 60
MIN_DEPTH = 20  # candidates each search contributes, at least; more when k is larger
# Languages with a stemmer and stop words in both engines (LanceDB's FTS tokenizer languages,
# OpenSearch's built-in language analyzers), by the ISO 639-1 code documents carry.
LEXICAL_LANGUAGES = ("en", "fr", "de", "es")


def lexical_field(language: str) -> str:
    return f"lexical_{language}"


LEXICAL_FIELDS = tuple(lexical_field(language) for language in LEXICAL_LANGUAGES)


def lexical_text(row: ChunkRow) -> str:
    """What the full-text search matches: the title and heading path (a merchant's name, a
    policy's topic) with the passage, as the embedding sees them too."""
    return "\n".join(part for part in (row.title, row.heading, row.text) if part)


def lexical_fields_for(filters: SearchFilter) -> tuple[str, ...]:
    """The fields a question is matched against: its filter's language only, or every one."""
    if filters.language is None:
        return LEXICAL_FIELDS
    if filters.language in LEXICAL_LANGUAGES:
        return (lexical_field(filters.language),)
    return ()


def depth(k: int) -> int:
    return max(k, MIN_DEPTH)


def fuse(rankings: Sequence[Sequence[str]], k: int, rrf_k: int = RRF_K,
         group_of: Mapping[str, str] | None = None) -> list[tuple[str, float]]:
    """The top ``k`` ids of the rankings (best first, each without repeats) by RRF score.
    Ties go to the id with the better single rank, then to the earlier ranking's order (the
    kNN one is passed first), so the result never depends on dict or set order.
    With ``group_of`` (chunk id -> doc id) only the best id of each group is kept: fewer than
    ``k`` come back when the rankings hold fewer groups."""
    scores: dict[str, float] = {}
    best: dict[str, tuple[int, int]] = {}
    for which, ranking in enumerate(rankings):
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
            best[item] = min(best.get(item, (rank, which)), (rank, which))
    order = sorted(scores, key=lambda item: (-scores[item], best[item]))
    if group_of is not None:
        kept: dict[str, str] = {}  # group -> its best item
        for item in order:
            kept.setdefault(group_of[item], item)
        order = [item for item in order if kept[group_of[item]] == item]
    return [(item, scores[item]) for item in order[:k]]

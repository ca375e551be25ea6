"""Dead letters: a record that failed validation, kept whole with the rule it broke.

The id is derived from the stream and the source position, so writing the same failure twice
(a retried load, a replayed partition) yields the same dead letter, not a second one.

Only ``raw_payload`` (classed personal) holds what the producer sent; every other field is
classed public, so it names the field and the rule, never a value (``validation``).
"""

from __future__ import annotations

import base64
import hashlib
import re

from mercury.contracts import registry, schemas
from mercury.contracts.sensitive import text_rule
from mercury.contracts.validation import Verdict

_EVENT_ID = re.compile(rb'"(?:event_id|change_id|request_id)"\s*:\s*"([^"]{1,64})"')
# An id as producers write them (uuids, ``req_...``): no spaces, no ``@``, so no name or
# e-mail a producer put where the id goes; digit runs are checked as card numbers.
_ID_SHAPED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def dead_letter_id(stream: str, position: str) -> str:
    return hashlib.sha256(f"{stream}|{position}".encode()).hexdigest()[:32]


def make_dead_letter(stream_name: str, position: str, raw: bytes, verdict: Verdict,
                     failed_at_ms: int) -> dict:
    spec = registry.stream(stream_name)
    found = _EVENT_ID.search(raw)  # even a truncated payload often still names its event
    event_id = found.group(1).decode("utf-8", errors="replace") if found else None
    if event_id is not None and (not _ID_SHAPED.match(event_id) or text_rule(event_id)):
        event_id = None  # the letter's public fields hold no value (module doc)
    try:
        text, as_base64 = raw.decode("utf-8"), False
    except UnicodeDecodeError:  # binary (Confluent Avro): kept exactly, for replay
        text, as_base64 = base64.b64encode(raw).decode("ascii"), True
    return {
        "dlq_id": dead_letter_id(stream_name, position),
        "source_stream": stream_name,
        "source_position": position,
        "raw_payload": text,
        "raw_payload_base64": as_base64,
        "rule": verdict.rule,
        "field": verdict.field,
        "error_message": verdict.message or verdict.rule,
        "schema_subject": spec.schema_subject,
        "schema_version": schemas.versions(spec.schema_subject)[-1],
        "event_id": event_id,
        "failed_at": failed_at_ms,
    }


def raw_payload(dead_letter: dict) -> bytes:
    """The failed payload's bytes, exactly as received."""
    text = dead_letter["raw_payload"]
    if dead_letter.get("raw_payload_base64"):  # absent in letters written before v2
        return base64.b64decode(text)
    return text.encode("utf-8")


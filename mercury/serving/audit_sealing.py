"""The audit question's encryption: fast on the request path, per user where it is kept.

- Request path (``seal_for_spool``): the question and its user id, sealed under this
  process's spool key (spool_keys.py) with AAD (request id, field). Memory only: no Postgres
  or KMS round trip per request.
- Shipper (``prefetch`` per shipped batch, then ``finish`` per record; off the request path):
  opens the spool envelope, redacts the question, and seals it again under the **user's** data
  key (privacy/userkeys.py: one get-or-create query for the whole batch), with the same AAD.
  What reaches the event log and the lake is ``enc2:user:<key id>:...``: shredding the user's
  key makes it unreadable everywhere it was copied.
- ``open_question``: the investigators' reveal (``mercury privacy decrypt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mercury.privacy import envelope
from mercury.privacy.errors import KeyError_
from mercury.privacy.redaction import redact
from mercury.serving.audit import RecordRejected
from mercury.serving.spool_keys import SpoolKeys

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.privacy.keys import Keys
    from mercury.privacy.userkeys import UserKey, UserKeyStore

AUDIT_STREAM = "inference_audit"
FIELD = "question"
SPOOL, USER = "spool", "user"


class AuditSealer:
    def __init__(self, spool_keys: SpoolKeys, user_keys: UserKeyStore, keys: Keys) -> None:
        self.spool_keys = spool_keys
        self.user_keys = user_keys
        self.keys = keys
        self._batch: dict[str, tuple[str, str, UserKey]] = {}

    def seal_for_spool(self, request_id: str, user_id: str, question: str) -> str:
        key_id, key = self.spool_keys.current()
        return envelope.seal(key, SPOOL, key_id, request_id, FIELD,
                             orjson.dumps({"user_id": user_id, "question": question}))

    def _open_spooled(self, record: dict[str, Any]) -> tuple[str, str]:
        sealed = envelope.parse(record[FIELD])
        if sealed.version != envelope.V2 or sealed.purpose != SPOOL:
            raise ValueError(f"not a spooled question ({sealed.version}:{sealed.purpose})")
        inner = orjson.loads(envelope.open_sealed(self.spool_keys.key(sealed.key_id), sealed,
                                                  record["request_id"], FIELD))
        return inner["user_id"], inner["question"]

    @staticmethod
    def _pending(stream: str, record: dict[str, Any]) -> bool:
        return stream == AUDIT_STREAM and record.get("question_redacted") is None and \
            str(record.get(FIELD, "")).startswith(f"{envelope.V2}:{SPOOL}:")

    def prefetch(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Open this batch's spooled questions and fetch (or make) their users' keys in one
        go. A record that does not open is left to ``finish``, which rejects it."""
        opened: dict[str, tuple[str, str]] = {}
        for stream, record in entries:
            if self._pending(stream, record):
                try:
                    opened[record["request_id"]] = self._open_spooled(record)
                except (ValueError, KeyError, TypeError, KeyError_):
                    continue
        user_keys = self.user_keys.keys_for(user for user, _ in opened.values())
        self._batch = {rid: (user, question, user_keys[user])
                       for rid, (user, question) in opened.items()}

    def finish(self, stream: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record as it ships: the question under the user's key, and redacted."""
        if stream != AUDIT_STREAM or record.get("question_redacted") is not None:
            return record
        if str(record.get(FIELD, "")).startswith(f"{envelope.V1}:"):  # spooled before the ring
            return {**record, "question_redacted": redact(envelope.open_enc1(
                self.keys.legacy_enc1, envelope.parse(record[FIELD])))}
        request_id = record["request_id"]
        if request_id in self._batch:
            user, question, key = self._batch.pop(request_id)
        else:
            try:
                user, question = self._open_spooled(record)
            except KeyError_ as exc:
                raise RecordRejected(f"the spooled question does not open: {exc}") from exc
            key = self.user_keys.keys_for([user])[user]
        sealed = envelope.seal(key.key, USER, key.key_id, request_id, FIELD, question.encode())
        return {**record, FIELD: sealed, "question_redacted": redact(question)}


def open_question(settings: Settings, keys: Keys, value: str, request_id: str | None,
                  field: str = FIELD, spool_folder: Path | None = None) -> str:
    """A sealed audit value in clear (``KeyErased`` when its user was erased)."""
    from mercury.privacy.userkeys import open_user_keys

    sealed = envelope.parse(value)
    if sealed.version == envelope.V1:
        return envelope.open_enc1(keys.legacy_enc1, sealed)
    if not request_id:
        raise ValueError("an enc2 value opens only with its request id (it is bound to it)")
    if sealed.purpose == USER:
        store = open_user_keys(settings, keys)
        try:
            key = store.get(sealed.key_id).key
        finally:
            store.close()
        return envelope.open_sealed(key, sealed, request_id, field).decode()
    if sealed.purpose == SPOOL and spool_folder is not None:
        spool_keys = SpoolKeys(spool_folder, owner="reveal", keys=keys, max_messages=1)
        inner = orjson.loads(envelope.open_sealed(spool_keys.key(sealed.key_id), sealed,
                                                  request_id, field))
        return str(inner["question"])
    raise ValueError(f"no key for enc2 values of purpose {sealed.purpose!r}")

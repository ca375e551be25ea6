"""User tokens and redaction of personal free text.

- ``user_token``: ``ut_`` + 32 hex of HMAC-SHA256(user id) under the active tokenization key.
  Deterministic, so the audit tables join on it; not reversible without the key.
  ``user_tokens`` gives a user's token under every retained version (a rotation changes tokens:
  rows from before carry the old one; erasure needs them all).
- ``redact``: masks what free text most often carries that identifies someone or a card
  (``mercury.privacy.redaction``).
Encryption of free text: ``mercury.privacy.envelope`` (formats) and
``mercury.serving.audit_sealing`` (which key seals the audit's question, and opening it).
"""

from __future__ import annotations

import hashlib
import hmac

from mercury.privacy.keys import Keys
from mercury.privacy.redaction import redact as redact  # re-exported: one place to mask


def _token(key: bytes, user_id: str) -> str:
    return f"ut_{hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:32]}"


def user_token(keys: Keys, user_id: str) -> str:
    return _token(keys.tokenization, user_id)


def user_tokens(keys: Keys, user_id: str) -> dict[int, str]:
    """The user's token under every retained tokenization version (version -> token)."""
    return {v: _token(keys.key("tokenization", v), user_id)
            for v in keys.versions("tokenization")}

"""User tokens, encryption of personal free text, and redaction.

- ``user_token``: ``ut_`` + 32 hex of HMAC-SHA256(user id). Deterministic, so the audit tables
  join on it; not reversible without the key, and different under each deployment's key.
- ``encrypt``/``decrypt``: AES-256-GCM, the key id in the envelope so a rotated key is named
  when it is missing: ``enc1:<key id>:<base64(nonce | ciphertext | tag)>``.
- ``redact``: masks what free text most often carries that identifies someone or a card
  (``mercury.privacy.redaction``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import cache

from mercury.privacy.keys import Keys
from mercury.privacy.redaction import redact as redact  # re-exported: one place to mask

ENVELOPE = "enc1"


def user_token(keys: Keys, user_id: str) -> str:
    digest = hmac.new(keys.tokenization, user_id.encode(), hashlib.sha256).hexdigest()
    return f"ut_{digest[:32]}"


@cache
def _cipher(key: bytes):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def encrypt(keys: Keys, text: str) -> str:
    nonce = os.urandom(12)
    sealed = _cipher(keys.encryption).encrypt(nonce, text.encode(), keys.key_id.encode())
    return f"{ENVELOPE}:{keys.key_id}:{base64.b64encode(nonce + sealed).decode()}"


def decrypt(keys: Keys, envelope: str) -> str:
    try:
        version, key_id, body = envelope.split(":", 2)
    except ValueError as exc:
        raise ValueError("not an encrypted value (expected enc1:<key id>:<data>)") from exc
    if version != ENVELOPE:
        raise ValueError(f"unknown envelope {version!r}")
    if key_id != keys.key_id:
        raise ValueError(f"encrypted under key {key_id}, this process has key {keys.key_id}")
    blob = base64.b64decode(body)
    return _cipher(keys.encryption).decrypt(blob[:12], blob[12:], key_id.encode()).decode()

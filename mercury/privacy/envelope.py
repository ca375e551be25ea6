"""Sealed values: AES-256-GCM envelopes that name their key and are bound to their place.

``enc2:<purpose>:<key id>:<base64(nonce | ciphertext | tag)>``. The AAD is the envelope's
header plus the value's place, (request id, field): a ciphertext copied into another request's
row or another field does not open, and neither does one whose header was edited to name
another key. Nonces are random 96-bit; each key's message count is kept within NIST SP
800-38D's bound by its owner (serving/audit_sealing.py).

``enc1:<key id>:<base64>`` is the one-key format before the ring (AAD: the key id only); it is
still read where its key is kept (``Keys.legacy_enc1``), never written.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

import orjson

V2, V1 = "enc2", "enc1"
_NONCE = 12


@dataclass(frozen=True)
class Envelope:
    version: str
    purpose: str  # "spool" | "user" for enc2; "" for enc1
    key_id: str
    blob: bytes


def _cipher(key: bytes) -> Any:
    # Not cached: a cache would keep every user's key in memory, shredded ones included
    # (making an AESGCM object costs about a microsecond).
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _aad(purpose: str, key_id: str, request_id: str, field: str) -> bytes:
    return orjson.dumps([V2, purpose, key_id, request_id, field])


def seal(key: bytes, purpose: str, key_id: str, request_id: str, field: str,
         plaintext: bytes) -> str:
    nonce = os.urandom(_NONCE)
    sealed = _cipher(key).encrypt(nonce, plaintext, _aad(purpose, key_id, request_id, field))
    return f"{V2}:{purpose}:{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def parse(value: str) -> Envelope:
    parts = value.split(":", 3)
    try:
        if parts[0] == V2 and len(parts) == 4:
            return Envelope(V2, parts[1], parts[2], base64.b64decode(parts[3], validate=True))
        if parts[0] == V1 and len(parts) == 3:
            return Envelope(V1, "", parts[1], base64.b64decode(parts[2], validate=True))
    except ValueError:
        pass
    raise ValueError("not a sealed value (expected enc2:<purpose>:<key id>:<data> or "
                     "enc1:<key id>:<data>)")


def open_sealed(key: bytes, envelope: Envelope, request_id: str, field: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    blob = envelope.blob
    try:
        return bytes(_cipher(key).decrypt(
            blob[:_NONCE], blob[_NONCE:],
            _aad(envelope.purpose, envelope.key_id, request_id, field)))
    except InvalidTag:
        raise ValueError(f"the value does not open as field {field!r} of request "
                         f"{request_id!r}: it belongs elsewhere or was altered") from None


def open_enc1(legacy: dict[str, bytes], envelope: Envelope) -> str:
    from cryptography.exceptions import InvalidTag

    key = legacy.get(envelope.key_id)
    if key is None:
        raise ValueError(f"encrypted under the retired key {envelope.key_id}, which is not kept")
    try:
        return bytes(_cipher(key).decrypt(envelope.blob[:_NONCE], envelope.blob[_NONCE:],
                                          envelope.key_id.encode())).decode()
    except InvalidTag:
        raise ValueError("the enc1 value was altered") from None

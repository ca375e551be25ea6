"""Request ids, minted by the context API and bound to the caller that made the request.

The id is the audit record's key and its idempotency key in the lake, so a caller must not
choose it (two answers under one id would leave one in the lake). It is 16 random hex digits
and 16 of an HMAC of them with the caller's name, so any serving process can tell, from the id
alone, which caller the request was answered for: ``/v1/outcomes`` accepts an outcome only
from that caller, without shared state between processes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_ID = re.compile(r"^[0-9a-f]{32}$")


def _signature(key: bytes, caller: str, nonce: str) -> str:
    return hmac.new(key, f"request-id:{caller}:{nonce}".encode(), hashlib.sha256).hexdigest()[:16]


def mint(key: bytes, caller: str) -> str:
    nonce = secrets.token_hex(8)
    return nonce + _signature(key, caller, nonce)


def minted_for(key: bytes, caller: str, request_id: object) -> bool:
    """Whether ``request_id`` was minted here for ``caller``."""
    if not isinstance(request_id, str) or not _ID.match(request_id):
        return False
    return hmac.compare_digest(request_id[16:], _signature(key, caller, request_id[:16]))

"""Who may ask for whose context, and how often.

Two credentials on every request:
- the **caller** (a service such as the LLM gateway) presents a service token in
  ``Authorization: Bearer``. Here a token is ``<caller>.<HMAC of the caller name>`` under the
  ``service_tokens`` key, so no token list is stored anywhere; in production the mesh's mTLS
  identity replaces it (docs/SERVING.md).
- the **end user** comes as an assertion signed by the identity provider when the user's app
  session asked the question (``mercury.serving.identity``): a caller can read exactly the
  users it holds a fresh assertion for, once each; a stolen service token alone reads nobody.

Rate limits are token buckets per caller, in each serving process.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from mercury.privacy.keys import Keys


class AccessDenied(Exception):
    """The request may not be answered; ``status`` is the HTTP status to return."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def service_token(keys: Keys, caller: str, version: int | None = None) -> str:
    """The caller's token under the active ``service_tokens`` key (or ``version``)."""
    key = keys.key("service_tokens", version)
    return f"{caller}.{hmac.new(key, caller.encode(), hashlib.sha256).hexdigest()}"


def authenticate_caller(keys: Keys, known_callers: frozenset[str], header: str | None) -> str:
    if not header or not header.startswith("Bearer "):
        raise AccessDenied(401, "missing service token (Authorization: Bearer <token>)")
    token = header[len("Bearer "):].strip()
    caller, _, _ = token.partition(".")
    # Bytes, not str: compare_digest refuses non-ASCII text, and a header is whatever came.
    # Any retained key version: after a rotation callers move to the new token at their pace.
    presented = token.encode("utf-8", "surrogateescape")
    if caller not in known_callers or not any(
            hmac.compare_digest(presented, service_token(keys, caller, v).encode())
            for v in keys.versions("service_tokens")):
        raise AccessDenied(401, "unknown or invalid service token")
    return caller


class RateLimiter:
    """A token bucket per caller: ``rate`` per second, up to ``burst`` at once."""

    def __init__(self, limits: dict[str, tuple[float, int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, caller: str) -> bool:
        rate, burst = self.limits[caller]
        now = self.clock()
        tokens, last = self._buckets.get(caller, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            return False
        self._buckets[caller] = (tokens - 1.0, now)
        return True

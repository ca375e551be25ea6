"""Who may ask for whose context, and how often.

Two credentials on every request:
- the **caller** (a service such as the LLM gateway) presents a service token in
  ``Authorization: Bearer``. Here a token is ``<caller>.<HMAC of the caller name>`` under the
  ``service_tokens`` key, so no token list is stored anywhere; in production the mesh's mTLS
  identity replaces it (docs/SERVING.md).
- the **end user** comes as an assertion: a JWT signed (EdDSA) by the identity provider when
  the user's app session asked the question, with ``sub`` = user id, ``aud`` = the caller it
  was issued to, ``iat``/``exp`` and a ``jti``. A caller can read exactly the users it holds a
  fresh assertion for: a stolen service token alone reads nobody.

Rate limits are token buckets per caller, in each serving process.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mercury.privacy.keys import Keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class AccessDenied(Exception):
    """The request may not be answered; ``status`` is the HTTP status to return."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def service_token(keys: Keys, caller: str) -> str:
    digest = hmac.new(keys.service_tokens, caller.encode(), hashlib.sha256).hexdigest()
    return f"{caller}.{digest}"


def authenticate_caller(keys: Keys, known_callers: frozenset[str], header: str | None) -> str:
    if not header or not header.startswith("Bearer "):
        raise AccessDenied(401, "missing service token (Authorization: Bearer <token>)")
    token = header[len("Bearer "):].strip()
    caller, _, _ = token.partition(".")
    if caller not in known_callers or not hmac.compare_digest(token, service_token(keys, caller)):
        raise AccessDenied(401, "unknown or invalid service token")
    return caller


def issue_assertion(keys: Keys, user_id: str, caller: str, ttl_s: int = 120,
                    now: float | None = None) -> str:
    """What the identity provider does (locally: for the demo, tests and the load tool)."""
    import jwt

    if keys.identity_private_pem is None:
        raise AccessDenied(500, "this process has no identity signing key")
    issued = int(time.time() if now is None else now)
    claims = {"sub": user_id, "aud": caller, "iat": issued, "exp": issued + ttl_s,
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, keys.identity_private_pem, algorithm="EdDSA")


@dataclass(frozen=True)
class Assertion:
    user_id: str
    assertion_id: str


class AssertionVerifier:
    """Checks signature, audience, times and subject. A signature check costs ~0.3 ms of CPU
    (PyJWT + Ed25519), so tokens whose signature already verified are remembered (bounded
    LRU); the time, audience and subject checks still run on every use."""

    def __init__(self, keys: Keys, max_age_s: int, leeway_s: int = 5,
                 remember: int = 50_000) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        # The identity provider signs with Ed25519 (``mercury.privacy.keys``).
        self._public = cast("Ed25519PublicKey", load_pem_public_key(keys.identity_public_pem))
        self.max_age_s = max_age_s
        self.leeway_s = leeway_s
        self.remember = remember
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def verify(self, token: str | None, caller: str, user_id: str) -> Assertion:
        if not token:
            raise AccessDenied(403, "missing end-user assertion")
        claims = self._verified.get(token)
        if claims is None:
            claims = self._signed_claims(token)
            self._verified[token] = claims
            if len(self._verified) > self.remember:
                self._verified.popitem(last=False)
        now = time.time()
        if claims["aud"] != caller:
            raise AccessDenied(403, "end-user assertion rejected: issued to another caller")
        if now > claims["exp"] + self.leeway_s:
            raise AccessDenied(403, "end-user assertion rejected: it has expired")
        if now - claims["iat"] > self.max_age_s + self.leeway_s:
            raise AccessDenied(403, "end-user assertion is older than allowed")
        if claims["sub"] != user_id:
            raise AccessDenied(403, "the assertion is for another user")
        return Assertion(claims["sub"], claims["jti"])

    def _signed_claims(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            claims = jwt.decode(token, self._public, algorithms=["EdDSA"],
                                options={"require": ["sub", "aud", "iat", "exp", "jti"],
                                         "verify_aud": False, "verify_exp": False,
                                         "verify_iat": False})
        except jwt.PyJWTError as exc:
            raise AccessDenied(403, f"end-user assertion rejected: {exc}") from exc
        if not all(isinstance(claims[c], int | float) for c in ("iat", "exp")) or \
                not isinstance(claims["aud"], str) or not isinstance(claims["sub"], str):
            raise AccessDenied(403, "end-user assertion rejected: malformed claims")
        return claims


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

"""End-user assertions, verified with the identity provider's public keys only.

The app's identity provider signs one assertion per question (EdDSA): ``iss`` (the provider),
``sub`` (the user), ``aud`` (the caller it was issued to), ``iat``/``nbf``/``exp`` and a
``jti``; its header names the key (``kid``). This process holds the provider's published key
set (JWKS, ``serving.identity.jwks_path``), never a private key. Checked on every request:

- the signature, with the key the header names (an unknown ``kid`` is refused);
- ``iss`` is the configured provider, ``aud`` the calling service, ``sub`` the user asked for;
- time, with a bounded skew: not before ``nbf``/``iat``, not after ``exp``, and a lifetime
  (``exp - iat``) of at most ``max_lifetime_s``, so a token dated years ahead never lives long;
- ``jti`` is used once: a replayed assertion is refused while it is still alive (the replay
  cache holds each id until its ``exp``; per process: in production the load balancer pins a
  caller's connection, and a shared cache is the step beyond, docs/SERVING.md).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


class AssertionRefused(Exception):
    """The end-user assertion does not hold; the message says why (HTTP 403)."""


@dataclass(frozen=True)
class Assertion:
    user_id: str
    assertion_id: str


def load_jwks(path: Path) -> dict[str, Any]:
    """``kid`` -> verifying key, from a JWKS document (Ed25519 keys only)."""
    import jwt

    try:
        document = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise AssertionRefused(f"no identity provider keys at {path}: {exc}") from exc
    keys = {}
    for entry in document.get("keys", []):
        if entry.get("kty") == "OKP" and entry.get("crv") == "Ed25519" and entry.get("kid"):
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="EdDSA").key
    if not keys:
        raise AssertionRefused(f"{path} holds no Ed25519 key with a kid")
    return keys


class AssertionVerifier:
    def __init__(self, keys: dict[str, Any], issuer: str, max_lifetime_s: int,
                 skew_s: int = 30, replay_capacity: int = 500_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.issuer = issuer
        self.max_lifetime_s = max_lifetime_s
        self.skew_s = skew_s
        self.replay_capacity = replay_capacity
        self.clock = clock
        self._seen: dict[str, float] = {}  # jti -> exp
        self._expiries: list[tuple[float, str]] = []  # heap of (exp, jti), to forget them

    def verify(self, token: str | None, caller: str, user_id: str) -> Assertion:
        if not token:
            raise AssertionRefused("missing end-user assertion")
        claims = self._signed_claims(token)
        now = self.clock()
        if claims["iss"] != self.issuer:
            raise AssertionRefused("issued by another identity provider")
        if claims["aud"] != caller:
            raise AssertionRefused("issued to another caller")
        if claims["sub"] != user_id:
            raise AssertionRefused("the assertion is for another user")
        if claims["iat"] > now + self.skew_s or claims.get("nbf", claims["iat"]) > now + \
                self.skew_s:
            raise AssertionRefused("not valid yet (iat/nbf in the future)")
        if now > claims["exp"] + self.skew_s:
            raise AssertionRefused("it has expired")
        if claims["exp"] - claims["iat"] > self.max_lifetime_s:
            raise AssertionRefused(f"it lives longer than {self.max_lifetime_s} s")
        self._use_once(claims["jti"], claims["exp"] + self.skew_s, now)
        return Assertion(claims["sub"], claims["jti"])

    def _signed_claims(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AssertionRefused(f"not a signed assertion ({exc})") from exc
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise AssertionRefused("signed with a key the identity provider does not publish")
        try:
            claims = jwt.decode(token, key, algorithms=["EdDSA"],
                                options={"require": ["iss", "sub", "aud", "iat", "exp", "jti"],
                                         "verify_aud": False, "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False,
                                         "verify_iss": False})
        except jwt.PyJWTError as exc:
            raise AssertionRefused(f"rejected: {exc}") from exc
        numbers = [claims[c] for c in ("iat", "exp") if c in claims] + (
            [claims["nbf"]] if "nbf" in claims else [])
        strings = [claims[c] for c in ("iss", "sub", "aud", "jti")]
        if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers) \
                or not all(isinstance(s, str) and 0 < len(s) <= 256 for s in strings):
            raise AssertionRefused("malformed claims")
        return dict(claims)

    def _use_once(self, jti: str, forget_at: float, now: float) -> None:
        while self._expiries and (self._expiries[0][0] < now or
                                  len(self._seen) >= self.replay_capacity):
            _, old = heapq.heappop(self._expiries)
            self._seen.pop(old, None)
        if jti in self._seen:
            raise AssertionRefused("this assertion was already used (replay)")
        self._seen[jti] = forget_at
        heapq.heappush(self._expiries, (forget_at, jti))

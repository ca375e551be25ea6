"""The app's identity provider, locally: it signs end-user assertions for the demo, the tests
and the load tool. The serving process never loads this module's key: it reads only the
public key set (JWKS) this module publishes, as it would read the real provider's.

Keys live in ``<data_dir>/idp/`` (mode 0700): ``signing.json`` (the Ed25519 private keys by
key id, newest last) and ``jwks.json`` (their public halves). ``rotate`` adds a key; old ones
stay published so assertions signed before the rotation still verify until they expire.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from mercury.config import Settings


def idp_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "idp"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _new_key() -> tuple[str, dict[str, str], dict[str, str]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    public_raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    kid = f"local-{secrets.token_hex(4)}"
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(public_raw), "kid": kid,
           "alg": "EdDSA", "use": "sig"}
    return kid, {"kid": kid, "pem": pem}, jwk


def _write(path: Path, data: dict[str, Any], mode: int) -> None:
    hidden = path.with_name(f".{path.name}.tmp")
    fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(hidden, path)


def ensure_keys(settings: Settings, rotate: bool = False) -> Path:
    """Create the signing key and its JWKS on first use (or add one: ``rotate``); the JWKS
    path. Safe when several processes start at once. Never in production: no process there
    may hold an identity provider's private key (the config refuses a production profile
    without ``serving.identity.jwks_path``; this is the second lock)."""
    if settings.profile == "production":
        raise RuntimeError("the local identity provider stand-in does not run in production; "
                           "set serving.identity.jwks_path to the provider's published keys")
    folder = idp_dir(settings)
    signing, jwks = folder / "signing.json", folder / "jwks.json"
    if not rotate and jwks.exists() and signing.exists():  # the common case: no lock
        return jwks
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keys = orjson.loads(signing.read_bytes()) if signing.exists() else {"keys": []}
        published = orjson.loads(jwks.read_bytes()) if jwks.exists() else {"keys": []}
        if rotate or not keys["keys"]:
            _, private, public = _new_key()
            keys["keys"].append(private)
            published["keys"].append(public)
            _write(signing, keys, 0o600)
            _write(jwks, published, 0o644)
    return jwks


def issue_assertion(settings: Settings, user_id: str, caller: str, ttl_s: int = 120,
                    now: float | None = None, kid: str | None = None, **claims: Any) -> str:
    """A signed assertion that ``user_id`` is asking, for ``caller``: ``iss``, ``sub``,
    ``aud``, ``iat``, ``nbf``, ``exp`` and a fresh ``jti``; the header names the key (``kid``).
    ``claims`` override any of them, ``kid`` the header's key id (tests forge bad ones)."""
    import jwt

    newest = _newest_key(ensure_keys(settings).with_name("signing.json"))
    issued = int(time.time() if now is None else now)
    body = {"iss": settings.serving.identity.issuer, "sub": user_id, "aud": caller,
            "iat": issued, "nbf": issued, "exp": issued + ttl_s, "jti": uuid.uuid4().hex,
            **claims}
    return jwt.encode(body, newest[1], algorithm="EdDSA", headers={"kid": kid or newest[0]})


def _newest_key(path: Path) -> tuple[str, Any]:
    """(kid, private key) of the newest signing key, loaded once per file version (tools
    mint thousands of assertions: the load tool one per request)."""
    return _load_key(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_key(path: Path, mtime_ns: int) -> tuple[str, Any]:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    newest = orjson.loads(path.read_bytes())["keys"][-1]
    return newest["kid"], load_pem_private_key(newest["pem"].encode(), password=None)

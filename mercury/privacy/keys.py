"""The keys that protect personal data, and where they come from.

Locally (``privacy.key_source: local_file``) one JSON file under ``<data_dir>/keys/`` holds
random keys, created with mode 0600 on first use and never committed: it stands in for KMS.
Each purpose has its own key, so leaking one (say the caller-token key) does not unmask
tokens or questions:

- ``tokenization``: HMAC-SHA256 key of user tokens (deterministic, so tokens join);
- ``encryption``: AES-256-GCM key of protected free text (the audit's ``question``);
- ``service_tokens``: HMAC key from which callers' service tokens are derived;
The identity provider's signing key is not among them: the context API holds only the
provider's published public keys (``mercury.serving.identity``; locally the stand-in in
``mercury.serving.local_idp`` keeps its own key apart). In production the same three come
from KMS (data keys wrapped by ``privacy.kms_key_id``); see docs/SERVING.md.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import secrets
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import orjson


class KeyError_(RuntimeError):
    """The keys cannot be loaded; the message says what to fix."""


@dataclass(frozen=True)
class Keys:
    key_id: str
    tokenization: bytes
    encryption: bytes
    service_tokens: bytes


def _new_key_material() -> dict[str, str]:
    raw = {name: secrets.token_bytes(32)
           for name in ("tokenization", "encryption", "service_tokens")}
    key_id = hashlib.sha256(b"".join(raw.values())).hexdigest()[:8]
    return {"key_id": key_id,
            **{name: base64.b64encode(value).decode() for name, value in raw.items()}}


def _read_or_create(path: Path) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.parent / ".keys.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once make one file
        if not path.exists():
            hidden = path.with_name(f".{path.name}.tmp")
            fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(orjson.dumps(_new_key_material(), option=orjson.OPT_INDENT_2))
            os.rename(hidden, path)
        return orjson.loads(path.read_bytes())


@cache
def _load_file(path: Path) -> Keys:
    raw = _read_or_create(path)
    try:
        return Keys(key_id=raw["key_id"],
                    tokenization=base64.b64decode(raw["tokenization"]),
                    encryption=base64.b64decode(raw["encryption"]),
                    service_tokens=base64.b64decode(raw["service_tokens"]))
    except (KeyError, ValueError) as exc:
        raise KeyError_(f"{path} is not a valid key file ({exc}); move it away to make a new "
                        "one (data protected with the old keys then cannot be read)") from exc


def load_keys(settings) -> Keys:
    if settings.privacy.key_source == "kms":
        raise KeyError_("privacy.key_source 'kms' runs only in the production image (data keys "
                        "from KMS); use 'local_file' on this machine")
    return _load_file(settings.key_file)

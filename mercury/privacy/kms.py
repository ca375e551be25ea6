"""Wrapping keys under a key-encryption key that never leaves its keeper (KMS).

``KeyWrapper`` wraps and unwraps a data key under an *encryption context*: a few names and
values bound to the wrapped blob (KMS checks them on decrypt and logs them in CloudTrail), so a
blob moved to another purpose or version does not unwrap. Two bindings, chosen by
``privacy.key_source``:

- ``LocalKek`` (``local_file``): a random key in ``<data_dir>/keys/privacy.json`` (mode 0600,
  created on first use, never committed) stands in for KMS on this machine;
- ``AwsKms`` (``kms``): AWS KMS through boto3, the key ``privacy.kms_key_id``.
"""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
from pathlib import Path
from typing import Any

import orjson

from mercury.privacy.errors import KeyError_

DATA_KEY_BYTES = 32  # AES-256


def context_bytes(context: dict[str, str]) -> bytes:
    """The encryption context as AAD: sorted, so the same context is always the same bytes."""
    return orjson.dumps(context, option=orjson.OPT_SORT_KEYS)


class KeyWrapper:
    """Wraps data keys under a key-encryption key. Subclasses implement ``wrap``/``unwrap``;
    ``generate_data_key`` has a default (KMS has its own, one round trip)."""

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        raise NotImplementedError

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        raise NotImplementedError

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        """A fresh random data key and its wrapped copy."""
        key = secrets.token_bytes(DATA_KEY_BYTES)
        return key, self.wrap(key, context)


class LocalKek(KeyWrapper):
    """The local stand-in for KMS: AES-256-GCM under a key kept in ``path`` (0600). The file
    may also hold the keys of the one-file layout before the key ring (``document``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        document = _read_or_add_kek(self.path)
        self._kek = base64.b64decode(document["kek"])
        self.document = document  # may hold the one-file layout's keys (keys._legacy)

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        return aead_wrap(self._kek, key, context)

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        return aead_unwrap(self._kek, blob, context, where=str(self.path))


def aead_wrap(kek: bytes, key: bytes, context: dict[str, str]) -> bytes:
    """``key`` sealed with AES-256-GCM under ``kek``, the context as AAD: how the local
    stand-in wraps, and how keys from the ring wrap the spool's and the users' data keys
    (those are wrapped locally, so no KMS round trip per key)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, key, context_bytes(context))


def aead_unwrap(kek: bytes, blob: bytes, context: dict[str, str], where: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(kek).decrypt(blob[:12], blob[12:], context_bytes(context))
    except InvalidTag as exc:
        raise KeyError_(f"a wrapped key does not unwrap under {where} with context {context} "
                        "(another key, or the blob was moved)") from exc


def _read_or_add_kek(path: Path) -> dict[str, Any]:
    """The key file, with a key-encryption key added on first use (two processes starting at
    once add one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.parent / ".keys.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        document = orjson.loads(path.read_bytes()) if path.exists() else {}
        if "kek" not in document:
            document["kek"] = base64.b64encode(secrets.token_bytes(DATA_KEY_BYTES)).decode()
            hidden = path.with_name(f".{path.name}.tmp")
            fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
            os.rename(hidden, path)
        return dict(document)


class AwsKms(KeyWrapper):
    """AWS KMS: ``Encrypt``/``Decrypt``/``GenerateDataKey`` under ``key_id`` with the
    encryption context. The key policy decides who may unwrap (the serving role, the shipper,
    the investigators' role) and CloudTrail logs every call with its context."""

    def __init__(self, key_id: str, client: Any = None) -> None:
        self.key_id = key_id
        if client is None:
            import boto3

            client = boto3.client("kms")
        self.client = client

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        reply = self.client.encrypt(KeyId=self.key_id, Plaintext=key,
                                    EncryptionContext=context)
        return bytes(reply["CiphertextBlob"])

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        from botocore.exceptions import ClientError

        try:
            reply = self.client.decrypt(KeyId=self.key_id, CiphertextBlob=blob,
                                        EncryptionContext=context)
        except ClientError as exc:
            raise KeyError_(f"KMS refused to unwrap a key with context {context}: "
                            f"{exc.response['Error'].get('Code')}") from exc
        return bytes(reply["Plaintext"])

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        reply = self.client.generate_data_key(KeyId=self.key_id, KeySpec="AES_256",
                                              EncryptionContext=context)
        return bytes(reply["Plaintext"]), bytes(reply["CiphertextBlob"])

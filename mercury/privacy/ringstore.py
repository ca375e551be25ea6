"""Where the key ring's document lives: one place every process reads, so every pod derives
the same user tokens.

The document holds only *wrapped* keys: whoever reads it learns nothing without the
key-encryption key (KMS). Writes are compare-and-swap on the version read, so two rotations at
once cannot both win (the loser gets ``RingConflict`` and retries on the new document).

- ``FileRingStore``: a file under ``<data_dir>/keys/`` (locally);
- ``S3RingStore``: an S3 object (``privacy.keyring_uri: s3://bucket/key``) written with S3's
  conditional writes (``If-Match`` on the ETag read, ``If-None-Match: *`` to create). S3 is
  already the company's shared store, versioned buckets keep every past ring, the bucket
  policy limits writers to the rotation role, and a pod reads it once at start.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any

from mercury.privacy.errors import RingConflict


class RingStore:
    """``read`` returns (document bytes or None when there is none yet, a version tag);
    ``write`` replaces the document only if it is still at ``expected`` (None: create)."""

    def read(self) -> tuple[bytes | None, str | None]:
        raise NotImplementedError

    def write(self, document: bytes, expected: str | None) -> None:
        raise NotImplementedError


class FileRingStore(RingStore):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> tuple[bytes | None, str | None]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write(self, document: bytes, expected: str | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.parent / ".ring.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.read()[1] != expected:
                raise RingConflict(f"{self.path} changed since it was read")
            hidden = self.path.with_name(f".{self.path.name}.tmp")
            fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(document)
            os.replace(hidden, self.path)


class S3RingStore(RingStore):
    def __init__(self, uri: str, client: Any = None) -> None:
        if not uri.startswith("s3://") or "/" not in uri[5:]:
            raise ValueError(f"privacy.keyring_uri {uri!r} is not s3://<bucket>/<key>")
        self.bucket, self.key = uri[5:].split("/", 1)
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def read(self) -> tuple[bytes | None, str | None]:
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None, None
        return reply["Body"].read(), reply["ETag"]

    def write(self, document: bytes, expected: str | None) -> None:
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=document,
                                   ServerSideEncryption="aws:kms", **condition)
        except ClientError as exc:
            if exc.response["Error"].get("Code") in ("PreconditionFailed",
                                                     "ConditionalRequestConflict"):
                raise RingConflict(f"s3://{self.bucket}/{self.key} changed since it was read"
                                   ) from exc
            raise

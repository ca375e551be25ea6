"""The batch jobs' code as one content-addressed zip on S3.

``build`` zips ``mercury/`` and ``spark_jobs/`` with fixed timestamps and permissions in name
order, so the same sources give the same bytes and the same SHA-256 on any machine, any day.
The hash is in every key (``<prefix>/<sha12>/...``): a job run names exactly the code it runs,
two versions never overwrite each other, and uploading the same code again is a no-op.
Uploaded beside the zip: each entry point script (EMR Serverless runs a file, not a module)
and the settings file the job reads (``--config``; secrets are never in it).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mercury.config import REPO_ROOT

PACKAGES = ("mercury", "spark_jobs")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can carry
_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}
SETTINGS_NAME = "mercury-settings.yaml"


@dataclass(frozen=True)
class CodePackage:
    """The zip's bytes, their SHA-256, and the entry point scripts' sources."""

    data: bytes
    sha256: str
    scripts: dict[str, bytes]

    @property
    def short(self) -> str:
        return self.sha256[:12]


def _files(root: Path) -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            if path.is_file() and path.suffix not in _SKIPPED_SUFFIXES \
                    and not _SKIPPED_DIRS & set(path.relative_to(root).parts):
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def build(root: Path = REPO_ROOT) -> CodePackage:
    """The zip of ``PACKAGES`` under ``root``; same sources, same bytes."""
    buffer = io.BytesIO()
    scripts: dict[str, bytes] = {}
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in _files(root):
            name = path.relative_to(root).as_posix()
            data = path.read_bytes()
            entry = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
            if name.startswith("spark_jobs/") and name.count("/") == 1 \
                    and name.endswith(".py") and not name.startswith("spark_jobs/__"):
                scripts[name] = data
    data = buffer.getvalue()
    return CodePackage(data, hashlib.sha256(data).hexdigest(), scripts)


@dataclass(frozen=True)
class UploadedCode:
    """Where a package's parts are on S3 (``s3://`` URIs)."""

    bucket: str
    prefix: str  # <code_prefix>/<sha12>
    sha256: str

    @property
    def zip_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/mercury.zip"

    def script_uri(self, script: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{script}"

    def settings_uri(self, settings_sha: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/settings/{settings_sha[:12]}/{SETTINGS_NAME}"


def _put_once(s3: Any, bucket: str, key: str, body: bytes) -> bool:
    """Put unless the key exists (its name holds its content's hash); True if written."""
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return True


def upload(s3: Any, package: CodePackage, bucket: str, prefix: str,
           settings_file: Path) -> tuple[UploadedCode, str]:
    """Upload the zip, its scripts and the settings file; (where they are, settings URI)."""
    uploaded = UploadedCode(bucket, f"{prefix.strip('/')}/{package.short}", package.sha256)
    _put_once(s3, bucket, uploaded.zip_uri.split("/", 3)[3], package.data)
    for script, data in package.scripts.items():
        _put_once(s3, bucket, f"{uploaded.prefix}/{script}", data)
    settings = settings_file.read_bytes()
    settings_uri = uploaded.settings_uri(hashlib.sha256(settings).hexdigest())
    _put_once(s3, bucket, settings_uri.split("/", 3)[3], settings)
    return uploaded, settings_uri

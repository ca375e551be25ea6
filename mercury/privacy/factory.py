"""The bindings of the key hierarchy, chosen by ``privacy`` settings (``key_source``,
``kms_key_id``, ``keyring_uri``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mercury.privacy.errors import KeyError_

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.privacy.kms import KeyWrapper
    from mercury.privacy.ringstore import RingStore


def ring_location(settings: Settings) -> str:
    """``privacy.keyring_uri``, or locally the ring file beside the key file."""
    return settings.privacy.keyring_uri or str(settings.data_dir / "keys" / "keyring.json")


def open_wrapper(source: str, key_file: Path, kms_key_id: str | None) -> KeyWrapper:
    from mercury.privacy.kms import AwsKms, LocalKek

    if source == "kms":
        if not kms_key_id:
            raise KeyError_("privacy.key_source is 'kms' but no KMS key is configured "
                            "(privacy.kms_key_id or the variable privacy.kms_key_id_env names)")
        return AwsKms(kms_key_id)
    return LocalKek(key_file)


def open_ring_store(location: str) -> RingStore:
    from mercury.privacy.ringstore import FileRingStore, S3RingStore

    if location.startswith("s3://"):
        return S3RingStore(location)
    return FileRingStore(Path(location))

"""The key ring: the service keys that protect personal data, versioned, kept wrapped.

Hierarchy (docs/COMPLIANCE.md, "Keys"):

    KMS key (privacy.kms_key_id; locally the key file standing in for it)
      └─ the key ring: one document in a shared place (privacy.keyring_uri: S3; locally
         <data_dir>/keys/keyring.json), every key in it wrapped by KMS under the context
         {ring, purpose, version}
           ├─ tokenization   HMAC key of user tokens
           ├─ service_tokens HMAC key of callers' service tokens
           ├─ spool          wraps each serving process's spool data key (serving/audit_sealing.py)
           ├─ user_kek       wraps every user's data key (privacy/userkeys.py)
           └─ user_index     HMAC key naming a user's row in privacy.user_keys (never rotated:
                             a new one would orphan every user's key)

Each purpose has versions and one ``active`` version; new values use the active one, every
retained version still unwraps and verifies. ``rotate`` adds a version and makes it active.

Rotating ``tokenization`` changes every user's token from then on: rows written before carry
the old token. Joins across the rotation need both (``protect.user_tokens`` gives a user's token
under every retained version; erasure deletes by all of them). Keep old versions as long as
rows carrying their tokens are kept (13 months).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import orjson

from mercury.privacy.errors import KeyError_, RingConflict  # KeyError_: callers catch it here

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.privacy.kms import KeyWrapper
    from mercury.privacy.ringstore import RingStore

PURPOSES = ("tokenization", "service_tokens", "spool", "user_kek", "user_index")
NOT_ROTATABLE = frozenset({"user_index"})
RING = "mercury-privacy"


class Keys:
    """The ring, unwrapped, in this process: ``key(purpose)`` is the active version's key,
    ``key(purpose, version)`` any retained one. A version newer than the ring read at start
    (rotated since) is fetched once from the shared ring."""

    def __init__(self, active: dict[str, int], material: dict[tuple[str, int], bytes],
                 legacy_enc1: dict[str, bytes] | None = None,
                 reload: Callable[[], Keys] | None = None) -> None:
        self.active = dict(active)
        self._material = dict(material)
        # The one-file layout's AES key by key id: 'enc1' values stay readable while it exists.
        self.legacy_enc1 = dict(legacy_enc1 or {})
        self._reload = reload

    def key(self, purpose: str, version: int | None = None) -> bytes:
        version = self.active[purpose] if version is None else version
        if (purpose, version) not in self._material and self._reload is not None:
            fresh = self._reload()
            self._material.update(fresh._material)
        try:
            return self._material[(purpose, version)]
        except KeyError:
            raise KeyError_(f"no {purpose} key version {version} in the key ring") from None

    def versions(self, purpose: str) -> list[int]:
        return sorted(v for p, v in self._material if p == purpose)

    @property
    def tokenization(self) -> bytes:
        return self.key("tokenization")

    @property
    def service_tokens(self) -> bytes:
        return self.key("service_tokens")


def _context(purpose: str, version: int) -> dict[str, str]:
    return {"ring": RING, "purpose": purpose, "version": str(version)}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _new_version(wrapper: KeyWrapper, purpose: str, version: int,
                 seed: bytes | None = None) -> dict[str, str]:
    context = _context(purpose, version)
    wrapped = wrapper.wrap(seed, context) if seed is not None else \
        wrapper.generate_data_key(context)[1]
    return {"wrapped": _b64(wrapped),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}


def _complete(document: dict[str, Any], wrapper: KeyWrapper,
              seeds: dict[str, bytes]) -> bool:
    """Add version 1 of every purpose the document lacks; whether anything was added."""
    ring = document.setdefault("purposes", {})
    missing = [p for p in PURPOSES if p not in ring]
    for purpose in missing:
        ring[purpose] = {"active": 1,
                         "versions": {"1": _new_version(wrapper, purpose, 1, seeds.get(purpose))}}
    return bool(missing)


def _update(store: RingStore, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read, change, write back if changed; again on the new document when another process
    wrote first (compare-and-swap)."""
    for _ in range(5):
        raw, tag = store.read()
        document = orjson.loads(raw) if raw is not None else {"format": 1}
        if not change(document):
            return document
        try:
            store.write(orjson.dumps(document, option=orjson.OPT_INDENT_2), tag)
            return document
        except RingConflict:
            continue
    raise KeyError_("the key ring kept changing under us (5 attempts); try again")


def unwrap_ring(document: dict[str, Any], wrapper: KeyWrapper,
                legacy_enc1: dict[str, bytes] | None = None,
                reload: Callable[[], Keys] | None = None) -> Keys:
    active: dict[str, int] = {}
    material: dict[tuple[str, int], bytes] = {}
    for purpose, entry in document["purposes"].items():
        active[purpose] = int(entry["active"])
        for version, item in entry["versions"].items():
            material[(purpose, int(version))] = wrapper.unwrap(
                base64.b64decode(item["wrapped"]), _context(purpose, int(version)))
    return Keys(active, material, legacy_enc1, reload)


def open_ring(store: RingStore, wrapper: KeyWrapper, seeds: dict[str, bytes] | None = None,
              legacy_enc1: dict[str, bytes] | None = None) -> Keys:
    """The ring from ``store``, created on first use (``seeds``: keys to adopt as version 1,
    so tokens made before the ring existed stay the same)."""
    document = _update(store, lambda doc: _complete(doc, wrapper, seeds or {}))

    def reload() -> Keys:
        raw, _ = store.read()
        return unwrap_ring(orjson.loads(raw or b"{}"), wrapper, legacy_enc1)

    return unwrap_ring(document, wrapper, legacy_enc1, reload)


def rotate_ring(store: RingStore, wrapper: KeyWrapper, purpose: str) -> int:
    """Add a version of ``purpose`` and make it active; the new version."""
    if purpose not in PURPOSES:
        raise KeyError_(f"no key purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    if purpose in NOT_ROTATABLE:
        raise KeyError_(f"{purpose} is not rotatable: it names every user's key row, and a new "
                        "one would orphan them all")
    added: list[int] = []

    def add(document: dict[str, Any]) -> bool:
        _complete(document, wrapper, {})
        entry = document["purposes"][purpose]
        version = max(int(v) for v in entry["versions"]) + 1
        entry["versions"][str(version)] = _new_version(wrapper, purpose, version)
        entry["active"] = version
        added[:] = [version]
        return True

    _update(store, add)
    return added[0]


def load_keys(settings: Settings) -> Keys:
    """This deployment's keys, loaded once per process (a few KMS calls at start, none after)."""
    from mercury.privacy.factory import ring_location

    return _load(settings.privacy.key_source, settings.key_file, ring_location(settings),
                 settings.privacy.resolved_kms_key_id())


@cache
def _load(source: str, key_file: Any, ring: str, kms_key_id: str | None) -> Keys:
    from mercury.privacy.factory import open_ring_store, open_wrapper

    wrapper = open_wrapper(source, key_file, kms_key_id)
    seeds, legacy = _legacy(wrapper)
    return open_ring(open_ring_store(ring), wrapper, seeds, legacy)


def _legacy(wrapper: KeyWrapper) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The keys of the one-file layout this ring replaces (local only): its tokenization and
    service-token keys become version 1 (tokens do not change), its AES key stays to read
    'enc1' values."""
    from mercury.privacy.kms import LocalKek

    if not isinstance(wrapper, LocalKek) or "key_id" not in wrapper.document:
        return {}, {}
    old = wrapper.document
    seeds = {p: base64.b64decode(old[p]) for p in ("tokenization", "service_tokens") if p in old}
    enc1 = {old["key_id"]: base64.b64decode(old["encryption"])} if "encryption" in old else {}
    return seeds, enc1


def forget_loaded_keys() -> None:
    """Load again on the next ``load_keys`` (after a rotation in this process)."""
    _load.cache_clear()


def rotate(settings: Settings, purpose: str) -> int:
    from mercury.privacy.factory import open_ring_store, open_wrapper, ring_location

    version = rotate_ring(open_ring_store(ring_location(settings)),
                          open_wrapper(settings.privacy.key_source, settings.key_file,
                                       settings.privacy.resolved_kms_key_id()), purpose)
    forget_loaded_keys()
    return version

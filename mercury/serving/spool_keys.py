"""The audit spool's data keys: one per serving process at a time, never one for the fleet.

Why: AES-GCM with random 96-bit nonces must stay below 2^32 messages per key (NIST SP 800-38D,
8.3), which one fleet-wide key would reach in ~10 h at the 120K req/s peak (~34 h at the 35K
average). Each process makes its own key at start and a new one after
``privacy.spool_key_max_messages`` (2^24) questions. Under a key, the chance that two of n random
nonces collide is at most n^2 / 2^97: 2^48 / 2^97 = 2^-49 at 2^24 messages, against NIST's
2^-32 budget. A process at 1K req/s makes a new key every ~4.7 h.

Each key is written wrapped (under the ring's ``spool`` key, locally: no KMS round trip) to
``<spool>/<owner>.<key id>.key`` *before* it seals anything, so the process that ships a dead
owner's spool can open its questions; the files go with the owner's spool.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from mercury.privacy.errors import KeyError_
from mercury.privacy.kms import DATA_KEY_BYTES, aead_unwrap, aead_wrap

if TYPE_CHECKING:
    from mercury.privacy.keys import Keys


def _context(key_id: str) -> dict[str, str]:
    return {"purpose": "spool-data-key", "key_id": key_id}


class SpoolKeys:
    def __init__(self, folder: Path, owner: str, keys: Keys, max_messages: int) -> None:
        self.folder = Path(folder)
        self.owner = owner
        self.keys = keys
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._known: dict[str, bytes] = {}
        self._current: tuple[str, bytes] | None = None
        self._used = 0

    def current(self) -> tuple[str, bytes]:
        """(key id, key) to seal the next question with; a new key every ``max_messages``."""
        with self._lock:
            if self._current is None or self._used >= self.max_messages:
                self._current = self._new_key()
                self._used = 0
            self._used += 1
            return self._current

    def _new_key(self) -> tuple[str, bytes]:
        key_id, key = secrets.token_hex(8), secrets.token_bytes(DATA_KEY_BYTES)
        version = self.keys.active["spool"]
        wrapped = aead_wrap(self.keys.key("spool", version), key, _context(key_id))
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.owner}.{key_id}.key"
        hidden = path.with_name(f".{path.name}.tmp")
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps({"ring_version": version,
                                    "wrapped": base64.b64encode(wrapped).decode()}))
            out.flush()
            os.fsync(out.fileno())  # the key must outlive the lines it seals
        os.replace(hidden, path)
        self._known[key_id] = key
        return key_id, key

    def key(self, key_id: str) -> bytes:
        """The spool key ``key_id``, this process's or a dead owner's (from its key file)."""
        if key_id in self._known:
            return self._known[key_id]
        found = list(self.folder.glob(f"*.{key_id}.key"))
        if not found:
            raise KeyError_(f"no spool key {key_id} in {self.folder}")
        entry = orjson.loads(found[0].read_bytes())
        key = aead_unwrap(self.keys.key("spool", int(entry["ring_version"])),
                          base64.b64decode(entry["wrapped"]), _context(key_id),
                          where=f"spool ring key v{entry['ring_version']}")
        self._known[key_id] = key
        return key


def forget_owner_keys(folder: Path, owner: str) -> None:
    """Remove a gone owner's key files once its spool is shipped."""
    for path in Path(folder).glob(f"{owner}.*.key"):
        path.unlink(missing_ok=True)

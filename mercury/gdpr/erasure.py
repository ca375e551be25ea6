"""GDPR Art. 17 erasure: a user out of every store, with evidence.

The flow, in order (docs/COMPLIANCE.md, "Erasure"):

1. the request is registered (``register``): from then on loaders and the streaming job drop
   the user's re-arriving data, so the erasure does not chase new copies;
2. the user's data keys are shredded: their encrypted audit text can never be read again,
   in any copy or backup;
3. the online store's keys go, and serving processes are told to drop their caches;
4. the profile row goes, and its CDC delete is pumped into the event log;
5. line files: the event log (the raw archive in production) and the streaming job's staged
   and compacted files;
6. the lake: row deletes, snapshot expiry, unreferenced files removed;
7. the warehouse tables;
8. the evidence is written and the register forgets the user id (the hash stays).

Each step is safe to repeat: a failed run is run again, and finds less to remove.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from mercury.config import FileEventLogConfig
from mercury.gdpr import evidence
from mercury.gdpr.evidence import Removal
from mercury.gdpr.files import erase_line_files
from mercury.gdpr.lake import erase_lake
from mercury.gdpr.online import erase_online
from mercury.gdpr.profiles import erase_profiles, pump_deletes
from mercury.gdpr.subject import Subject, subject
from mercury.gdpr.warehouse import erase_warehouse
from mercury.privacy import erasure_register as register

if TYPE_CHECKING:
    from mercury.config import Settings

# Serving processes keep a user's last values this long at most; an erasure notice outlives it.
NOTICE_KEEP_MS = 2 * 86_400_000


def request_erasure(settings: Settings, ticket: str, user_id: str,
                    requested_at: datetime | None = None) -> register.Request:
    from mercury.privacy.keys import load_keys

    found = subject(load_keys(settings), ticket, user_id)
    return register.submit(settings, ticket, user_id, found.erasure_hash,
                           requested_at or datetime.now(UTC), found.token_hashes)


def erase_pending(settings: Settings, progress: Callable[[str], None] = print,
                  batch_size: int = 100) -> list[dict]:
    """Every registered request not yet completed, the oldest first, ``batch_size`` at a
    time (each store is scanned once per batch); returns the evidence rows written."""
    pending = register.pending(settings)
    written: list[dict] = []
    for start in range(0, len(pending), batch_size):
        written += erase(settings, pending[start:start + batch_size], progress)
    return written


def erase(settings: Settings, requests: list[register.Request],
          progress: Callable[[str], None] = print) -> list[dict]:
    """Erases the requests' users from every store, as one batch; evidence per ticket."""
    from mercury.online.factory import open_store
    from mercury.privacy.keys import load_keys

    done = [r.ticket for r in requests if r.user_id is None]
    if done:
        raise ValueError(f"requests {done} are completed: nothing to erase")
    started = datetime.now(UTC)
    clock = time.perf_counter()
    keys = load_keys(settings)
    batch = [subject(keys, r.ticket, cast(str, r.user_id)) for r in requests]
    removals: list[Removal] = []

    def step(name: str, run: Callable[[], list[Removal]]) -> None:
        at = time.perf_counter()
        found = run()
        removals.extend(found)
        progress(f"   {name}: removed {sum(r.removed for r in found):,} "
                 f"({time.perf_counter() - at:.1f} s)")

    progress(f"erasing {len(batch)} user(s): {', '.join(r.ticket for r in requests)}")
    step("data keys", lambda: _shred_keys(settings, batch))
    with open_store(settings) as store:
        step("online store", lambda: erase_online(store, batch))
        store.publish_erasures([s.erasure_hash for s in batch], int(time.time() * 1000),
                               NOTICE_KEEP_MS)
    step("profiles", lambda: erase_profiles(settings, batch))
    pump_deletes(settings)
    if isinstance(settings.event_log, FileEventLogConfig):  # Kafka: retention, see the docs
        root = settings.event_log.root
        step("event log", lambda: erase_line_files(root, batch, "event_log",
                                                   offsets_root=root / "_offsets"))
    step("staged files", lambda: erase_line_files(_staging(settings), batch, "staged_files"))
    step("lake", lambda: erase_lake(settings, batch, started))
    step("warehouse", lambda: erase_warehouse(settings, batch))
    erased_at = datetime.now(UTC)
    rows = evidence.rows({r.ticket: r for r in requests}, erased_at, removals)
    evidence.record(settings, rows)
    for request in requests:
        register.complete(settings, request.ticket, erased_at)
    progress(f"   erased {len(batch)} user(s) in {time.perf_counter() - clock:.1f} s, "
             f"{sum(r.removed for r in removals):,} items")
    return rows


def _shred_keys(settings: Settings, batch: list[Subject]) -> list[Removal]:
    from mercury.privacy.userkeys import shred_user_keys

    return [Removal(who.ticket, "keys", "user data keys", shred_user_keys(settings, who.user_id))
            for who in batch]


def _staging(settings: Settings):
    from mercury.lake.compact import staging_dir

    return staging_dir(settings)

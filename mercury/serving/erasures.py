"""Serving forgets erased users: the snapshot cache drops them within seconds.

The snapshot cache keeps a user's last values for up to a day, to answer when the store
fails; an erased user must not be answered from it. The erasure publishes the users' erasure
hashes in the online store (``OnlineStore.publish_erasures``); each serving process polls
them every few seconds, off the event loop, and evicts the matching users.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from mercury.privacy.keys import Keys
from mercury.privacy.tombstones import erasure_hash
from mercury.serving.features import FeatureFetcher

log = logging.getLogger(__name__)
POLL_S = 5.0


class ErasureWatch:
    def __init__(self, features: FeatureFetcher, keys: Keys, poll_s: float = POLL_S) -> None:
        self.features = features
        self.keys = keys
        self.poll_s = poll_s
        # Erasures published before this process started concern caches it never had.
        self.seen_ms = int(time.time() * 1000)
        self.evicted = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def poll(self) -> int:
        """One look at the published erasures; returns the users evicted."""
        store = self.features.reader.store
        found = await asyncio.to_thread(store.erasures_since, self.seen_ms)
        if not found:
            return 0
        self.seen_ms = max(at for _, at in found)
        hashes = {h for h, _ in found}
        evicted = self.features.snapshots.forget(
            lambda user_id: erasure_hash(self.keys, user_id) in hashes)
        self.evicted += evicted
        return evicted

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # noqa: BLE001 - a store hiccup: look again next time
                log.warning("erasure notices not read: %s", exc)
            await asyncio.sleep(self.poll_s)

"""Serving forgets erased users: the snapshot cache drops them within seconds.

The snapshot cache keeps a user's last values for up to a day, to answer when the store
fails; an erased user must not be answered from it. The erasure publishes the users' erasure
hashes in the online store (``OnlineStore.publish_erasures``); each serving process polls
them every few seconds, off the event loop, and evicts the matching users.
"""

from __future__ import annotations

import asyncio
import time

from mercury.privacy.keys import Keys
from mercury.privacy.tombstones import erasure_hash
from mercury.serving.features import FeatureFetcher
from mercury.serving.periodic import Periodic

POLL_S = 5.0


class ErasureWatch(Periodic):
    def __init__(self, features: FeatureFetcher, keys: Keys, poll_s: float = POLL_S) -> None:
        super().__init__("reading erasure notices", self.poll, poll_s)
        self.features = features
        self.keys = keys
        # Erasures published before this process started concern caches it never had.
        self.seen_ms = int(time.time() * 1000)
        self.evicted = 0

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

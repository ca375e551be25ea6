"""The fallback priors a serving process holds in memory, and their refresh.

The priors are published in the online store (``mercury.features.offline.priors``), the
store whose failure they stand in for: read there on demand they would fail with it. So each
process copies them into memory at warm-up and every ``serving.priors_refresh_s``, off the
event loop; a refresh that fails keeps the copy it has. A copy never outlives its process, and
a day-old average is as good a prior as a fresh one (docs/SERVING.md, "Fallback priors").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from mercury.features.offline.priors import POPULATION
from mercury.online import layout
from mercury.online.store import OnlineStore
from mercury.serving.periodic import Periodic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prior:
    values: dict[str, Any]
    segment: str  # the user's segment ("FR/LOW"), or "population"
    users: int  # how many users it averages
    as_of_ms: int  # the end of the day it was computed as of


class PriorBook:
    """The newest priors of each (set, version) this process has read."""

    def __init__(self, store: OnlineStore, set_versions: Iterable[tuple[str, int]]) -> None:
        self.store = store
        self.keys = {layout.prior_key(name, version): (name, version)
                     for name, version in sorted(set(set_versions))}
        self._docs: dict[tuple[str, int], dict[str, Any]] = {}

    def refresh(self) -> int:
        """Reads every prior document (blocking: call it off the event loop); a document
        that is gone (expired, never published) or unreadable keeps the copy held. Returns
        how many documents are held."""
        for key, raw in zip(self.keys, self.store.get_values(list(self.keys)), strict=True):
            if raw is None:
                continue
            try:
                self._docs[self.keys[key]] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("prior %s does not decode; keeping the copy held", key)
        return len(self._docs)

    def lookup(self, name: str, version: int | None, segment: str | None) -> Prior | None:
        """The prior of the user's segment when published, else the population's."""
        doc = self._docs.get((name, version)) if version is not None else None
        if doc is None:
            return None
        own = doc["segments"].get(segment) if segment is not None else None
        if segment is None or own is None:
            return Prior(doc["population"]["values"], POPULATION, doc["population"]["count"],
                         doc["as_of_ms"])
        return Prior(own["values"], segment, own["count"], doc["as_of_ms"])


def watch(book: PriorBook, every_s: float) -> Periodic:
    """Refreshes ``book`` every ``every_s`` in the background, off the event loop (the
    warm-up read it first: ``ContextService.start_warm_up``)."""

    async def refresh() -> None:
        await asyncio.wait_for(asyncio.to_thread(book.refresh), 5.0)

    return Periodic("refreshing the fallback priors (the copy held is served)", refresh,
                    every_s, wait_first=True)

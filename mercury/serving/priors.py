"""The fallback priors a serving process holds in memory, and their refresh.

The priors are published in the online store (``mercury.features.offline.priors``), the
store whose failure they stand in for: read there on demand they would fail with it. So each
process copies them into memory at warm-up and every ``serving.priors_refresh_s``, off the
event loop; a refresh that fails keeps the copy it has. A copy never outlives its process, and
a day-old average is as good a prior as a fresh one (docs/SERVING.md, "Fallback priors").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from mercury.features.offline.priors import POPULATION
from mercury.online import layout
from mercury.online.store import OnlineStore

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
        part = doc["segments"].get(segment) if segment is not None else None
        label = segment if part is not None else POPULATION
        part = part or doc["population"]
        return Prior(part["values"], label, part["count"], doc["as_of_ms"])


class PriorWatch:
    """Refreshes a ``PriorBook`` every ``every_s`` in the background."""

    def __init__(self, book: PriorBook, every_s: float) -> None:
        self.book = book
        self.every_s = every_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:  # the warm-up read them first (ContextService.start_warm_up)
            await asyncio.sleep(self.every_s)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.book.refresh), 5.0)
            except Exception as exc:  # noqa: BLE001 - keep the copy, try again later
                log.warning("fallback priors not refreshed (serving the copy held): %s", exc)

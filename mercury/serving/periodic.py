"""A step run every few seconds in the background of a serving process (erasure notices,
the fallback priors): started and stopped with the process; a step that fails is logged and
tried again at the next turn, never taking the loop down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, what: str, step: Callable[[], Awaitable[object]], every_s: float,
                 *, wait_first: bool = False) -> None:
        self.what = what  # for the log line when a step fails
        self.step = step
        self.every_s = every_s
        self.wait_first = wait_first  # the first turn after ``every_s`` (done at warm-up)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        if self.wait_first:
            await asyncio.sleep(self.every_s)
        while True:
            try:
                await self.step()
            except Exception as exc:  # noqa: BLE001 - a store hiccup: try again next turn
                log.warning("%s failed (next try in %.0f s): %s", self.what, self.every_s, exc)
            await asyncio.sleep(self.every_s)

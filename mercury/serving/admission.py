"""Admission: how many requests this process works on at once, and what waits.

A process that takes every request it is sent answers all of them late (or, worse, answers them
on time without their context). So at most ``limit`` requests are worked on at once; the next
ones wait in line, each no longer than its own deadline for starting (the budget minus what an
answer takes), and a request that cannot start in time is shed at once with a 503 and a
``Retry-After``: the load balancer sends it to another instance while it can still be answered.
Waiting requests start in arrival order (asyncio's semaphore is FIFO).
"""

from __future__ import annotations

import asyncio


class Overloaded(Exception):
    """This process cannot answer within the budget; shed the request (503, Retry-After)."""

    def __init__(self, reason: str, retry_after_s: float = 1.0):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Admission:
    def __init__(self, limit: int, max_wait_ms: float):
        self.limit = limit
        self.max_wait_s = max_wait_ms / 1000
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0
        self.shed = 0

    async def enter(self, wait_s: float | None = None) -> None:
        """Take a slot within ``wait_s`` (at most ``max_wait_ms``), else ``Overloaded``."""
        wait_s = self.max_wait_s if wait_s is None else max(0.0, min(wait_s, self.max_wait_s))
        if self._slots.locked() and wait_s <= 0:
            self.shed += 1
            raise Overloaded(f"all {self.limit} slots busy")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), wait_s)
        except TimeoutError:
            self.shed += 1
            raise Overloaded(f"no slot within {wait_s * 1000:.0f} ms "
                             f"({self.limit} busy, {self.waiting - 1} waiting)") from None
        finally:
            self.waiting -= 1
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self._slots.release()

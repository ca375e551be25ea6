"""Admission: how many requests this process works on at once, and what waits.

A process that takes every request it is sent answers all of them late (or, worse, answers them
on time without their context). So at most ``limit`` requests are worked on at once: one core
finishes ``limit`` requests of ~1.5 ms of CPU each well inside the 20 ms feature deadline
(docs/SERVING.md, "Admission"). The next ``max_waiting`` wait in line, each no longer than
``max_wait_ms``; beyond that line, or past that wait, a request is shed at once with a 503 and
a ``Retry-After`` (before any parsing or signature check: shedding must cost next to nothing,
or an overloaded process spends its core on refusals). The load balancer sends it to another
instance while it can still be answered. Waiting requests start in arrival order (asyncio's
semaphore is FIFO).
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
    def __init__(self, limit: int, max_wait_ms: float, max_waiting: int | None = None):
        self.limit = limit
        self.max_wait_s = max_wait_ms / 1000
        self.max_waiting = limit if max_waiting is None else max_waiting
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0
        self.shed = 0

    async def enter(self, wait_s: float | None = None) -> None:
        """Take a slot within ``wait_s`` (at most ``max_wait_ms``), else ``Overloaded``."""
        wait_s = self.max_wait_s if wait_s is None else max(0.0, min(wait_s, self.max_wait_s))
        if self._slots.locked() and (wait_s <= 0 or self.waiting >= self.max_waiting):
            self.shed += 1
            raise Overloaded(f"all {self.limit} slots busy, {self.waiting} waiting")
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

    @property
    def crowded(self) -> bool:
        """Every slot is taken: a deadline missed now is this process's doing."""
        return self.in_flight >= self.limit

    def leave(self) -> None:
        self.in_flight -= 1
        self._slots.release()

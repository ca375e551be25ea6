"""A circuit breaker per backing store: stop waiting on a store that keeps failing.

Closed: calls go through; ``failures`` consecutive failures (errors or missed deadlines) open
it. Open: calls are refused at once (the caller answers from its fallback without spending
its deadline) for ``reset_s``. Then one trial call is let through (half-open): success closes
the breaker, failure opens it for another ``reset_s``, and a trial that says nothing about the
store (``release``: the process itself was overloaded) lets the next call try. A trial nobody
reported on stops blocking after ``reset_s``, so a forgotten outcome cannot wedge it open.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(self, name: str, failures: int, reset_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.max_failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_started: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self._opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open":
            now = self.clock()
            if self._trial_started is None or now - self._trial_started >= self.reset_s:
                self._trial_started = now
                return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_started = None

    def failure(self) -> None:
        self._failures += 1
        if self._trial_started is not None or self._failures >= self.max_failures:
            self._opened_at = self.clock()
        self._trial_started = None

    def release(self) -> None:
        """The call said nothing about the store (it was refused or overloaded here)."""
        self._trial_started = None

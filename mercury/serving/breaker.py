"""A circuit breaker per backing store: stop waiting on a store that is failing.

It opens on evidence about the store only: in the last ``window_s`` at least ``min_calls``
calls were judged and at least ``failure_rate`` of them failed (an error from the store, or a
timeout whose timer fired on time on a healthy loop). What says nothing about the store is not
judged at all (``release``): a deadline the caller shortened, one user's undecodable data, this
process's own overload. Open: calls are refused at once (the caller answers from its fallback
without spending its deadline) for ``reset_s``; then one trial is let through (half-open):
success closes the breaker, failure opens it again. A trial nobody reported on stops blocking
after ``reset_s``, so a forgotten outcome cannot wedge it open.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from mercury.serving.admission import Overloaded

if TYPE_CHECKING:
    from mercury.serving.overload import LoopMonitor


class CircuitBreaker:
    def __init__(self, name: str, min_calls: int = 5, failure_rate: float = 0.5,
                 window_s: float = 10.0, reset_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.min_calls = min_calls
        self.failure_rate = failure_rate
        self.window_s = window_s
        self.reset_s = reset_s
        self.clock = clock
        self._calls: deque[tuple[float, bool]] = deque()  # (when, failed), oldest first
        self._failed = 0
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
        if self._opened_at is not None:  # the trial succeeded: the store is back
            self._opened_at = self._trial_started = None
            self._calls.clear()
            self._failed = 0
            return
        self._judge(failed=False)

    def failure(self) -> None:
        if self._opened_at is not None:  # the trial failed (or a late report): stay open
            self._opened_at = self.clock()
            self._trial_started = None
            return
        self._judge(failed=True)
        if len(self._calls) >= self.min_calls and \
                self._failed >= self.failure_rate * len(self._calls):
            self._opened_at = self.clock()

    def release(self) -> None:
        """The call said nothing about the store: it is not judged (a trial may go again)."""
        self._trial_started = None

    def _judge(self, failed: bool) -> None:
        now = self.clock()
        self._calls.append((now, failed))
        self._failed += failed
        while self._calls and now - self._calls[0][0] > self.window_s:
            _, old = self._calls.popleft()
            self._failed -= old


def judge_timeout(breaker: CircuitBreaker, monitor: LoopMonitor | None, deadline_s: float,
                  store_deadline_s: float, waited_s: float, what: str,
                  crowded: bool = False) -> str:
    """A read of ``what`` timed out: who is to blame. This process's own load (every slot
    taken, its timer fired late, or its loop lags): ``Overloaded``, the request is shed. A
    deadline the budget cut short: ``"budget"``, nothing learnt about the store. Else the
    store was slow: ``"deadline"``, judged against it."""
    if crowded or (monitor is not None and monitor.blames_us(deadline_s, waited_s)):
        breaker.release()
        raise Overloaded(f"the {what} missed its deadline under this process's own load")
    if deadline_s < store_deadline_s * 0.99:
        breaker.release()
        return "budget"
    breaker.failure()
    return "deadline"


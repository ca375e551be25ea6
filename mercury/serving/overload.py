"""Is this process itself the bottleneck? The event loop's lag says so.

A task sleeps ``interval_s`` over and over and records how late it wakes. When the process is
saturated (more requests than its CPU can take), every coroutine waits for the loop, so a
Redis reply that arrived in 1 ms is handled 30 ms later and the fetch misses its deadline.
Two decisions follow from the lag:

- such a missed deadline is not the store's fault, so it must not open the store's breaker
  (otherwise an overloaded process sheds every feature and answers empty, fast);
- new requests are refused with 503 while the lag is over ``max_lag_ms``, so the load
  balancer sends them to another instance instead of queueing them here past the budget.
"""

from __future__ import annotations

import asyncio
import time


class LoopMonitor:
    def __init__(self, interval_s: float = 0.005, max_lag_ms: float = 30.0,
                 decay: float = 0.1) -> None:
        self.interval_s = interval_s
        self.max_lag_ms = max_lag_ms
        # Weight of the newest sample: 0.1 every 5 ms smooths over ~50 ms, so one stall of the
        # host (the OS running another process) does not refuse requests, sustained lag does.
        self.decay = decay
        self.lag_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            late_ms = max(0.0, (time.perf_counter() - before - self.interval_s) * 1000)
            self.lag_ms = self.decay * late_ms + (1 - self.decay) * self.lag_ms

    @property
    def overloaded(self) -> bool:
        return self.lag_ms > self.max_lag_ms

    def blames_us(self, deadline_s: float, waited_s: float | None = None) -> bool:
        """A fetch waits for several loop turns (write, reply, wake-up), each as late as the
        lag, so a deadline missed while the loop lags even a tenth of it says nothing about
        the store; only a miss on a healthy loop counts against the store's breaker.

        The smoothed lag trails a stall that has only just begun, so the fetch's own timer is
        the second witness: a timeout handled well after its deadline (``waited_s``) fired on
        a loop that was busy right then."""
        slack_s = max(0.002, deadline_s / 10)
        late = waited_s is not None and waited_s - deadline_s > slack_s
        return late or self.lag_ms > slack_s * 1000

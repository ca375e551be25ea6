"""Feature sets of one user from the online store, within a deadline, with a fallback.

The read is ``ContextReader.acontext``: the same plan, pointer cache and decode that the
tests hold to the reference executor, so the API serves exactly what the oracle computes.

When the store fails or misses its deadline, each set comes from the **last known snapshot**
of that user in this process (the values as of when they were read, flagged ``snapshot`` with
that as-of time), else it is **unavailable**: ``values`` is null, never zeros, because "no
spend" and "spend unknown" must not look alike to the model.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from mercury.features.reader import ContextReader
from mercury.serving.breaker import CircuitBreaker

if TYPE_CHECKING:
    from mercury.serving.overload import LoopMonitor

ONLINE, SNAPSHOT, UNAVAILABLE = "online", "snapshot", "unavailable"
USER_TAG = "u"  # the entity whose context the API serves


@dataclass(frozen=True)
class SetContext:
    name: str
    version: int | None
    source: str  # online | snapshot | unavailable
    as_of_ms: int | None
    newest_event_ms: int | None
    values: dict[str, Any] | None  # feature -> value (see ``mercury.features.reader``)


class SnapshotCache:
    """The newest values served per (user, set), least recently used out."""

    def __init__(self, max_users: int, max_age_ms: int) -> None:
        self.max_entries = max_users * 6  # about one entry per set of each user
        self.max_age_ms = max_age_ms
        self._entries: OrderedDict[tuple[str, str], SetContext] = OrderedDict()

    def put(self, user_id: str, ctx: SetContext) -> None:
        if self.max_entries <= 0:
            return
        key = (user_id, ctx.name)
        self._entries[key] = ctx
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, user_id: str, name: str, now_ms: int) -> SetContext | None:
        ctx = self._entries.get((user_id, name))
        # Only online reads are put here: they have an as-of time.
        if ctx is None or now_ms - cast(int, ctx.as_of_ms) > self.max_age_ms:
            return None
        return replace(ctx, source=SNAPSHOT)


class FeatureFetcher:
    """The context API's feature read: ``ContextReader.acontext`` (the one read path) within
    a deadline, behind a breaker, with the snapshot fallback."""

    def __init__(self, reader: ContextReader, breaker: CircuitBreaker, snapshots: SnapshotCache,
                 monitor: LoopMonitor | None = None) -> None:
        self.reader = reader
        self.set_names = reader.set_names
        self.breaker = breaker
        self.snapshots = snapshots
        self.monitor = monitor  # LoopMonitor: tells a slow store from a saturated process

    async def fetch(self, user_id: str, names: list[str], as_of_ms: int, deadline_s: float
                    ) -> tuple[dict[str, SetContext], str | None]:
        """The sets, and why the online read was not used (None when it was)."""
        if not names:
            return {}, None
        if not self.breaker.allow():
            return self._fallback(user_id, names, as_of_ms), "breaker_open"
        started = time.perf_counter()
        try:
            context = await asyncio.wait_for(
                self.reader.acontext(USER_TAG, user_id, as_of_ms, names), deadline_s)
        except Exception as exc:  # noqa: BLE001 - any store failure degrades, never a 500
            reason = "deadline" if _is_timeout(exc) else type(exc).__name__
            if reason == "deadline" and self.monitor is not None and \
                    self.monitor.blames_us(deadline_s, time.perf_counter() - started):
                self.breaker.release()
                return self._fallback(user_id, names, as_of_ms), "overloaded"
            self.breaker.failure()
            return self._fallback(user_id, names, as_of_ms), reason
        self.breaker.success()
        found: dict[str, SetContext] = {}
        for name in names:
            if name not in context.values:  # no version of this set is served (yet)
                found[name] = SetContext(name, None, UNAVAILABLE, None, None, None)
                continue
            found[name] = ctx = SetContext(name, context.versions[name], ONLINE, as_of_ms,
                                           context.newest_event_ms[name], context.values[name])
            self.snapshots.put(user_id, ctx)
        return found, None

    def _fallback(self, user_id: str, names: list[str], as_of_ms: int) -> dict[str, SetContext]:
        served = self.reader.served_versions()
        out: dict[str, SetContext] = {}
        for name in names:
            snap = self.snapshots.get(user_id, name, as_of_ms)
            out[name] = snap or SetContext(name, served.get(name), UNAVAILABLE,
                                           None, None, None)
        return out


def _is_timeout(exc: BaseException) -> bool:
    # asyncio's deadline, or redis-py's own socket timeout (redis.exceptions.TimeoutError)
    return isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError"

"""Feature sets of one user from the online store, within a deadline, with a fallback.

The read is ``ContextReader.acontext``: the same plan, pointer cache and decode that the
tests hold to the reference executor, so the API serves exactly what the oracle computes.

Each set comes back with its source:
- ``online``: read now;
- ``missing``: the store answered but holds nothing for this user (``no_data``) or this set's
  bytes do not decode (``corrupt``): served as its ``prior`` when one is held, else ``values``
  is null, never zeros; only that set is hit;
- ``snapshot``: the store failed or missed its deadline; the last values this process served
  for the user, flagged with their own as-of time;
- ``prior``: no real values to give (the store failed and no snapshot is held, or the user's
  set is missing): the average of the user's segment (home country x risk tier), or of the
  population when the segment is unknown or small, computed daily in the batch path
  (``mercury.features.offline.priors``) and held in memory (``mercury.serving.priors``); never
  mixed with real values: a set is real or prior as a whole;
- ``unavailable``: as ``prior``, with no prior published for the set: ``values`` is null.

Only evidence about the store is reported to its breaker: an error, or a timeout of the
store's own deadline on a process that is not busy, whose timer fired on time, and after
which the store does not answer a PING at once either. A timeout under this process's own
load raises ``Overloaded`` (the request is shed, never answered emptier); a timeout of a
deadline the caller's budget shortened says nothing about the store either.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mercury.features.offline.priors import PROFILE_SET, segment_of
from mercury.features.reader import ContextReader
from mercury.serving.admission import Overloaded
from mercury.serving.breaker import CircuitBreaker, judge_timeout

if TYPE_CHECKING:
    from mercury.serving.overload import LoopMonitor
    from mercury.serving.priors import PriorBook

ONLINE, SNAPSHOT, MISSING, PRIOR, UNAVAILABLE = (
    "online", "snapshot", "missing", "prior", "unavailable")
USER_TAG = "u"  # the entity whose context the API serves


@dataclass(frozen=True)
class SetContext:
    name: str
    version: int | None
    source: str  # online | missing | snapshot | prior | unavailable
    as_of_ms: int | None
    newest_event_ms: int | None
    values: dict[str, Any] | None  # feature -> value (see ``mercury.features.reader``)
    reason: str | None = None  # why not online: no_data, corrupt, breaker_open, deadline ...
    segment: str | None = None  # a prior's: whose average it is ("FR/LOW", "population")
    segment_users: int | None = None  # a prior's: how many users it averages


class SnapshotCache:
    """The newest values served per (user, set), least recently used out."""

    def __init__(self, max_users: int, max_age_ms: int) -> None:
        self.max_entries = max_users * 6  # about one entry per set of each user
        self.max_age_ms = max_age_ms
        self._entries: OrderedDict[tuple[str, str], SetContext] = OrderedDict()

    def put(self, user_id: str, ctx: SetContext) -> None:
        if self.max_entries <= 0 or ctx.as_of_ms is None:
            return
        key = (user_id, ctx.name)
        self._entries[key] = ctx
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, erased: Callable[[str], bool]) -> int:
        """Drops every entry of the users ``erased`` says yes to; returns how many users."""
        users = {user for user, _ in self._entries if erased(user)}
        for key in [k for k in self._entries if k[0] in users]:
            del self._entries[key]
        return len(users)

    def get(self, user_id: str, name: str, now_ms: int) -> SetContext | None:
        ctx = self._entries.get((user_id, name))
        if ctx is None or ctx.as_of_ms is None or now_ms - ctx.as_of_ms > self.max_age_ms:
            return None
        return replace(ctx, source=SNAPSHOT)


class FeatureFetcher:
    """The context API's feature read: ``ContextReader.acontext`` (the one read path) within
    a deadline, behind a breaker, with the snapshot and prior fallbacks."""

    def __init__(self, reader: ContextReader, breaker: CircuitBreaker, snapshots: SnapshotCache,
                 monitor: LoopMonitor | None = None, store_deadline_s: float = 0.020,
                 crowded: Callable[[], bool] = lambda: False,
                 priors: PriorBook | None = None) -> None:
        self.reader = reader
        self.set_names = reader.set_names
        self.breaker = breaker
        self.snapshots = snapshots
        self.monitor = monitor  # LoopMonitor: tells a slow store from a saturated process
        self.store_deadline_s = store_deadline_s
        self.crowded = crowded  # every admission slot taken (``Admission.crowded``)
        self.priors = priors

    async def fetch(self, user_id: str, names: list[str], as_of_ms: int, deadline_s: float,
                    *, pinned: bool = False) -> dict[str, SetContext]:
        """Each wanted set. ``deadline_s`` is what is left for the read (at most the store's
        own deadline); ``pinned``: the caller chose the as-of time (nothing is remembered
        as the user's latest values)."""
        if not names:
            return {}
        if not self.breaker.allow():
            return self._fallback(user_id, names, as_of_ms, "breaker_open")
        started = time.perf_counter()
        try:
            context = await asyncio.wait_for(
                self.reader.acontext(USER_TAG, user_id, as_of_ms, names), deadline_s)
        except Exception as exc:  # noqa: BLE001 - any store failure degrades, never a 500
            if not _is_timeout(exc):
                self.breaker.failure()
                return self._fallback(user_id, names, as_of_ms, type(exc).__name__)
            waited_s = time.perf_counter() - started
            if not self.crowded() and await self._store_answers():
                # The store answers a PING at once: the read was slow because of this
                # process (its loop was busy), evidence the loop monitor can miss.
                self.breaker.release()
                raise Overloaded("the feature read missed its deadline while the store "
                                 "answers: this process's own load") from None
            reason = judge_timeout(self.breaker, self.monitor, deadline_s,
                                   self.store_deadline_s, waited_s, "feature read",
                                   self.crowded())
            return self._fallback(user_id, names, as_of_ms, reason)
        self.breaker.success()
        found: dict[str, SetContext] = {}
        read_profile = None if PROFILE_SET in context.missing else \
            context.values.get(PROFILE_SET)
        for name in names:
            version = context.versions.get(name)
            if name in context.missing:
                reason = context.missing[name]
                found[name] = self._prior(user_id, name, version, as_of_ms, reason,
                                          read_profile) or SetContext(
                    name, version, MISSING, as_of_ms, None, None, reason)
            elif name not in context.values:  # no version of this set is served (yet)
                found[name] = SetContext(name, None, UNAVAILABLE, None, None, None,
                                         "not_served")
            else:
                found[name] = ctx = SetContext(name, version, ONLINE, as_of_ms,
                                               context.newest_event_ms[name],
                                               context.values[name])
                if not pinned:
                    self.snapshots.put(user_id, ctx)
        return found

    async def warm_up(self, connections: int = 4) -> None:
        """Open a few of the store's connections and read the served versions, so the first
        requests pay for neither (a new asyncio Redis connection costs handshakes)."""
        await asyncio.gather(*(self.reader.store.aping() for _ in range(connections)))
        await self.reader.acontext(USER_TAG, "warm-up", names=self.set_names)

    async def _store_answers(self) -> bool:
        """Whether the store answers a PING within a fifth of its deadline."""
        try:
            await asyncio.wait_for(self.reader.store.aping(), self.store_deadline_s / 5)
        except Exception:  # noqa: BLE001 - no answer is the answer
            return False
        return True

    def _fallback(self, user_id: str, names: list[str], as_of_ms: int, reason: str
                  ) -> dict[str, SetContext]:
        """The store gave nothing: per set, this process's snapshot of the user, else the
        prior of the user's segment, else nothing."""
        served = self.reader.served_versions()
        out = {}
        for name in names:
            snap = self.snapshots.get(user_id, name, as_of_ms)
            out[name] = replace(snap, reason=reason) if snap else self._prior(
                user_id, name, served.get(name), as_of_ms, reason) or SetContext(
                name, served.get(name), UNAVAILABLE, None, None, None, reason)
        return out

    def _prior(self, user_id: str, name: str, version: int | None, as_of_ms: int, reason: str,
               read_profile: dict[str, Any] | None = None) -> SetContext | None:
        """The set's prior for the user's segment, known without the store that failed: the
        profile this read returned, else the one this process last served (its snapshot),
        else unknown (the population's prior)."""
        if self.priors is None:
            return None
        if read_profile is None:
            snap = self.snapshots.get(user_id, PROFILE_SET, as_of_ms)
            read_profile = snap.values if snap else None
        prior = self.priors.lookup(name, version, segment_of(read_profile))
        if prior is None:
            return None
        return SetContext(name, version, PRIOR, prior.as_of_ms, None, prior.values, reason,
                          prior.segment, prior.users)


def _is_timeout(exc: BaseException) -> bool:
    # asyncio's deadline, or redis-py's own socket timeout (redis.exceptions.TimeoutError)
    return isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError"

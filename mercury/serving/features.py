"""Feature sets of one user from the online store, within a deadline, with a fallback.

One pipelined round trip reads every wanted set's hash (all of a user's keys share a hash
tag, so it is one node on Redis Cluster); the served-version pointers are cached for
``pointer_ttl_ms`` and refreshed in the same round trip when stale. Values are decoded with
``mercury.online.reader.decode``, the function the store is tested against the reference
executor with, so the API serves exactly what the oracle computes.

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

from mercury.online import layout
from mercury.online.reader import decode
from mercury.serving.breaker import CircuitBreaker

ONLINE, SNAPSHOT, UNAVAILABLE = "online", "snapshot", "unavailable"


@dataclass(frozen=True)
class SetContext:
    name: str
    version: int | None
    source: str  # online | snapshot | unavailable
    as_of_ms: int | None
    newest_event_ms: int | None
    values: dict | None


class SnapshotCache:
    """The newest values served per (user, set), least recently used out."""

    def __init__(self, max_users: int, max_age_ms: int):
        self.max_entries = max_users * 6  # about one entry per set of each user
        self.max_age_ms = max_age_ms
        self._entries: OrderedDict = OrderedDict()

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
        if ctx is None or now_ms - ctx.as_of_ms > self.max_age_ms:
            return None
        return replace(ctx, source=SNAPSHOT)


class FeatureFetcher:
    def __init__(self, client, feature_sets, breaker: CircuitBreaker, snapshots: SnapshotCache,
                 monitor=None, pointer_ttl_ms: int = 1_000):
        self.client = client  # redis.asyncio client (or cluster client)
        self.catalog = {(fs.name, fs.version): fs for fs in feature_sets}
        self.set_names = sorted({fs.name for fs in feature_sets})
        self.breaker = breaker
        self.snapshots = snapshots
        self.monitor = monitor  # LoopMonitor: tells a slow store from a saturated process
        self.pointer_ttl_ms = pointer_ttl_ms
        self._versions: dict[str, int] = {}
        self._versions_read_ms: int | None = None

    async def fetch(self, user_id: str, names: list[str], as_of_ms: int, deadline_s: float
                    ) -> tuple[dict[str, SetContext], str | None]:
        """The sets, and why the online read was not used (None when it was)."""
        if not names:
            return {}, None
        if not self.breaker.allow():
            return self._fallback(user_id, names, as_of_ms), "breaker_open"
        started = time.perf_counter()
        try:
            found = await asyncio.wait_for(self._read(user_id, names, as_of_ms), deadline_s)
        except Exception as exc:  # noqa: BLE001 - any store failure degrades, never a 500
            reason = "deadline" if _is_timeout(exc) else type(exc).__name__
            if reason == "deadline" and self.monitor is not None and \
                    self.monitor.blames_us(deadline_s, time.perf_counter() - started):
                self.breaker.release()
                return self._fallback(user_id, names, as_of_ms), "overloaded"
            self.breaker.failure()
            return self._fallback(user_id, names, as_of_ms), reason
        self.breaker.success()
        for ctx in found.values():
            if ctx.source == ONLINE:
                self.snapshots.put(user_id, ctx)
        return found, None

    async def _read(self, user_id: str, names: list[str], as_of_ms: int) -> dict:
        now_ms = int(time.time() * 1000)
        refresh = self._versions_read_ms is None or \
            now_ms - self._versions_read_ms >= self.pointer_ttl_ms
        wanted = [(n, self._versions.get(n)) for n in names]
        pipe = self.client.pipeline(transaction=False)
        if refresh:
            pipe.mget([layout.active_key(n) for n in self.set_names])
        sets = []
        for name, version in wanted:
            fs = self.catalog.get((name, version)) if version is not None else None
            sets.append(fs)
            if fs is not None:
                pipe.hgetall(layout.entity_key(fs, user_id))
        replies = await pipe.execute()
        if refresh:
            pointers = replies.pop(0)
            self._versions = {n: int(v) for n, v in zip(self.set_names, pointers, strict=True)
                              if v is not None}
            self._versions_read_ms = now_ms
            if any(fs is None or fs.version != self._versions.get(fs.name) for fs in sets):
                return await self._read(user_id, names, as_of_ms)  # pointers moved: reread
        out, replies_iter = {}, iter(replies)
        for (name, _), fs in zip(wanted, sets, strict=True):
            if fs is None:  # no version of this set is served (yet)
                out[name] = SetContext(name, None, UNAVAILABLE, None, None, None)
                continue
            fields = {k.decode(): v for k, v in next(replies_iter).items()}
            stamp = fields.get(layout.STAMP_FIELD)
            out[name] = SetContext(name, fs.version, ONLINE, as_of_ms,
                                   int(stamp) if stamp else None, decode(fs, fields, as_of_ms))
        return out

    def _fallback(self, user_id: str, names: list[str], as_of_ms: int) -> dict:
        out = {}
        for name in names:
            snap = self.snapshots.get(user_id, name, as_of_ms)
            out[name] = snap or SetContext(name, self._versions.get(name), UNAVAILABLE,
                                           None, None, None)
        return out


def _is_timeout(exc: BaseException) -> bool:
    # asyncio's deadline, or redis-py's own socket timeout (redis.exceptions.TimeoutError)
    return isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError"


def redis_client(config, socket_timeout_s: float):
    """An asyncio Redis client for the serving path: a short connect timeout, so a dead store
    fails fast. Reads are bounded by the fetch's deadline; the socket timeout is only a
    backstop for a connection nobody waits on any more."""
    import os

    import redis.asyncio as aioredis

    password = os.environ.get(config.password_env) if config.password_env else None
    kwargs = dict(host=config.host, port=config.port, password=password,
                  socket_timeout=socket_timeout_s, socket_connect_timeout=0.05,
                  retry_on_timeout=False)
    if config.cluster:
        return aioredis.RedisCluster(**kwargs)
    return aioredis.Redis(db=config.db, max_connections=64, **kwargs)

"""The online store on Redis (ElastiCache in cluster mode in production).

Writes go in one pipeline per batch: HSET of whole fields, HDEL of dead tiles, PEXPIRE. The
connection is made on first use, so building a store does no I/O. On Redis Cluster every
key of one entity shares a hash tag, so a pipeline per entity stays on one node; the served
version pointers and their history share the ``{active}`` tag, so promotion and rollback are
one atomic script on one node.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from mercury.online import layout
from mercury.online.store import OnlineStore

# KEYS: pointer, history. Remembers the replaced version (the last 20), never the same twice.
_PROMOTE = """
local before = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if before and before ~= ARGV[1] then
  redis.call('RPUSH', KEYS[2], before)
  redis.call('LTRIM', KEYS[2], -20, -1)
end
return before
"""
# KEYS: pointer, history. One step back: the history's newest entry is served again.
_ROLLBACK = """
local restored = redis.call('RPOP', KEYS[2])
if not restored then return false end
local replaced = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], restored)
return {replaced or '', restored}
"""


class RedisOnlineStore(OnlineStore):
    def __init__(self, config, client=None):
        self.config = config
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import redis

            password = os.environ.get(self.config.password_env) if self.config.password_env \
                else None
            kwargs = dict(host=self.config.host, port=self.config.port, password=password)
            if self.config.cluster:
                self._client = redis.RedisCluster(**kwargs)
            else:
                self._client = redis.Redis(db=self.config.db, **kwargs)
        return self._client

    def write(self, writes: Sequence) -> None:
        if not writes:
            return
        pipe = self.client.pipeline(transaction=False)
        for w in writes:
            if w.replace:
                pipe.delete(w.key)
            if w.set_fields:
                pipe.hset(w.key, mapping=w.set_fields)
            if w.delete_fields:
                pipe.hdel(w.key, *w.delete_fields)
            if w.ttl_ms:
                pipe.pexpire(w.key, w.ttl_ms)
        pipe.execute()

    def read(self, keys: Sequence[str]) -> list[dict[str, bytes]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [{k.decode(): v for k, v in fields.items()} for fields in pipe.execute()]

    def active_versions(self, set_names: Sequence[str]) -> dict[str, int | None]:
        values = self.client.mget([layout.active_key(n) for n in set_names])
        return {n: None if v is None else int(v) for n, v in zip(set_names, values, strict=True)}

    def set_active(self, set_name: str, version: int) -> None:
        self.client.set(layout.active_key(set_name), version)

    def put_values(self, values: dict[str, bytes], ttl_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(key, value, px=ttl_ms)
        pipe.execute()

    def get_values(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)  # one GET per key: an MGET across slots fails on a cluster
        return pipe.execute()

    def scan(self, pattern: str) -> Iterator[str]:
        # SCAN, never KEYS: it does not block the server; on a cluster redis-py scans every
        # primary. A key may be reported twice while the server rehashes: callers dedupe.
        for key in self.client.scan_iter(match=pattern, count=1_000):
            yield key.decode() if isinstance(key, bytes) else key

    def expire(self, keys: Sequence[str], ttl_ms: int) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.pexpire(key, ttl_ms, lt=True)  # LT: a sooner expiry stays (no TTL = infinite)
        pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return sum(pipe.execute())

    def promote(self, set_name: str, version: int) -> int | None:
        before = self.client.eval(_PROMOTE, 2, layout.active_key(set_name),
                                  layout.active_key(set_name) + ":history", version)
        return None if before is None else int(before)

    def rollback(self, set_name: str) -> tuple[int | None, int] | None:
        result = self.client.eval(_ROLLBACK, 2, layout.active_key(set_name),
                                  layout.active_key(set_name) + ":history")
        if not result:
            return None
        replaced, restored = result
        return (int(replaced) if replaced else None), int(restored)

    def pointer_history(self, set_name: str) -> list[int]:
        return [int(v) for v in self.client.lrange(layout.active_key(set_name) + ":history",
                                                   0, -1)]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

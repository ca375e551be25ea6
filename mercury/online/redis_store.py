"""The online store on Redis (ElastiCache in cluster mode in production).

Writes go in one pipeline per batch: HSET of whole fields, HDEL of dead tiles, PEXPIRE. Reads
(``fetch``) are one pipeline too, with the served-version pointers in it when asked, over a
blocking client (jobs, commands) or an asyncio one (the context API); both are made on first
use, so building a store does no I/O. On Redis Cluster every key of one entity shares a hash
tag, so a pipeline per entity stays on one node; the served version pointers and their
history share the ``{active}`` tag, so promotion and rollback are one atomic script on one
node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mercury.online import layout
from mercury.online.store import Hashes, KeyWrite, OnlineStore, Versions

if TYPE_CHECKING:
    from mercury.config import RedisStoreConfig

# The clients are redis-py's ``Redis``/``RedisCluster`` (blocking) and their ``redis.asyncio``
# twins, or a test's stand-in. redis-py types every command's reply as ``Awaitable[Any] | Any``
# for both kinds, so the clients are ``Any`` here and replies are typed where they are read.
Client = Any

# KEYS: one hash; ARGV: pairs of (hop label, first tile index still read). Deletes the tile
# fields of those hops below their index: the writer need not know which tiles exist.
_PRUNE_TILES = """
local first = {}
for i = 1, #ARGV, 2 do first[ARGV[i]] = tonumber(ARGV[i + 1]) end
local dead = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  local hop, index = string.match(name, '^t:([^:]+):(-?%d+)$')
  if hop and first[hop] and tonumber(index) < first[hop] then dead[#dead + 1] = name end
end
for i = 1, #dead, 1000 do
  redis.call('HDEL', KEYS[1], unpack(dead, i, math.min(i + 999, #dead)))
end
return #dead
"""
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
    def __init__(self, config: RedisStoreConfig, client: Client | None = None,
                 async_client: Client | None = None) -> None:
        self.config = config
        self._client = client
        self._async_client = async_client

    @property
    def client(self) -> Client:
        if self._client is None:
            import redis

            kwargs = dict(self.config.connection_kwargs(), socket_timeout=self.config.job_timeout_s,
                          socket_connect_timeout=self.config.job_timeout_s)
            self._client = redis.RedisCluster(**kwargs) if self.config.cluster \
                else redis.Redis(db=self.config.db, **kwargs)
        return self._client

    @property
    def async_client(self) -> Client:
        """The event loop's client: a short connect timeout, so a dead store fails fast.
        Reads are bounded by the caller's deadline; the socket timeout is only a backstop for
        a connection nobody waits on any more."""
        if self._async_client is None:
            import redis.asyncio as aioredis

            cfg = self.config
            kwargs = dict(self.config.connection_kwargs(), socket_timeout=cfg.read_timeout_s,
                          socket_connect_timeout=cfg.connect_timeout_s,
                          max_connections=cfg.max_connections)
            # The cluster client has no retry_on_timeout (it retries by its own rules)
            self._async_client = aioredis.RedisCluster(**kwargs) if cfg.cluster else \
                aioredis.Redis(db=cfg.db, retry_on_timeout=False, **kwargs)
        return self._async_client

    # ---- reads ------------------------------------------------------------------------------

    def _read_pipeline(self, client: Client, keys: Sequence[str],
                       pointer_sets: Sequence[str]) -> Any:  # the client's pipeline
        pipe = client.pipeline(transaction=False)
        for name in pointer_sets:  # a GET each: a cluster pipeline refuses MGET
            pipe.get(layout.active_key(name))
        for key in keys:
            pipe.hgetall(key)
        return pipe

    @staticmethod
    def _versions(pointer_sets: Sequence[str], values: list[bytes | None]) -> Versions:
        return {n: None if v is None else int(v)
                for n, v in zip(pointer_sets, values, strict=True)}

    def _replies(self, replies: list[Any], pointer_sets: Sequence[str]) -> tuple[Hashes, Versions]:
        pointers = len(pointer_sets)
        versions = self._versions(pointer_sets, replies[:pointers])
        return [{k.decode(): v for k, v in fields.items()} for fields in replies[pointers:]], \
            versions

    def fetch(self, keys: Sequence[str], pointer_sets: Sequence[str] = ()
              ) -> tuple[Hashes, Versions]:
        if not keys:  # pointers only: one MGET, no pipeline
            return [], self._versions(pointer_sets, self.client.mget(
                [layout.active_key(n) for n in pointer_sets]) if pointer_sets else [])
        replies = self._read_pipeline(self.client, keys, pointer_sets).execute()
        return self._replies(replies, pointer_sets)

    async def afetch(self, keys: Sequence[str], pointer_sets: Sequence[str] = ()
                     ) -> tuple[Hashes, Versions]:
        if not keys:
            return [], self._versions(pointer_sets, await self.async_client.mget(
                [layout.active_key(n) for n in pointer_sets]) if pointer_sets else [])
        replies = await self._read_pipeline(self.async_client, keys, pointer_sets).execute()
        return self._replies(replies, pointer_sets)

    async def aping(self) -> None:
        await self.async_client.ping()

    # ---- writes -----------------------------------------------------------------------------

    def write(self, writes: Sequence[KeyWrite]) -> None:
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
            if w.prune_tiles:
                args = [a for hop, first in w.prune_tiles
                        for a in (layout.hop_label(hop), first)]
                # EVAL by hand: a cluster pipeline has no eval() and refuses EVALSHA; it
                # routes EVAL by its key like any command (Redis caches the compiled script)
                pipe.execute_command("EVAL", _PRUNE_TILES, 1, w.key, *args)
            if w.ttl_ms:
                pipe.pexpire(w.key, w.ttl_ms)
        pipe.execute()

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
        values: list[bytes | None] = pipe.execute()
        return values

    def scan(self, pattern: str) -> Iterator[str]:
        # SCAN, never KEYS: it does not block the server; on a cluster redis-py scans every
        # primary. A key may be reported twice while the server rehashes: callers dedupe.
        for key in self.client.scan_iter(match=pattern, count=1_000):
            yield key.decode() if isinstance(key, bytes) else key

    def delete(self, keys: Sequence[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:  # one key per command: keys of different slots on a cluster
            pipe.delete(key)
        return sum(pipe.execute())

    def publish_erasures(self, hashes: Sequence[str], at_ms: int, keep_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        if hashes:
            pipe.zadd(layout.ERASURES_KEY, {h: at_ms for h in hashes})
        pipe.zremrangebyscore(layout.ERASURES_KEY, "-inf", at_ms - keep_ms)
        pipe.execute()

    def erasures_since(self, after_ms: int) -> list[tuple[str, int]]:
        found = self.client.zrangebyscore(layout.ERASURES_KEY, f"({after_ms}", "+inf",
                                          withscores=True)
        return [(h.decode() if isinstance(h, bytes) else h, int(score)) for h, score in found]

    def expire(self, keys: Sequence[str], ttl_ms: int) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.pexpire(key, ttl_ms, lt=True)  # LT: a sooner expiry stays (no TTL = infinite)
        pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        exists: list[int] = pipe.execute()
        return sum(exists)

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

    async def aclose(self) -> None:
        self.close()
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

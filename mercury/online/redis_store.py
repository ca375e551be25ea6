"""The online store on Redis (ElastiCache in cluster mode in production).

Writes go in one pipeline per batch: HSET of whole fields, HDEL of dead tiles, PEXPIRE. The
connection is made on first use, so building a store does no I/O. On Redis Cluster every
key of one entity shares a hash tag, so a pipeline per entity stays on one node.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mercury.online import layout
from mercury.online.store import OnlineStore


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

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

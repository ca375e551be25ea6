"""The online store named by configuration (``online_store.type``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from mercury.online.store import OnlineStore

if TYPE_CHECKING:
    from mercury.config import MemoryStoreConfig, RedisStoreConfig, Settings


def open_store(config: Settings | RedisStoreConfig | MemoryStoreConfig) -> OnlineStore:
    """A backend for ``config`` (an ``OnlineStoreConfig``, or ``Settings``: its
    ``online_store``). No I/O: backends connect on first use."""
    store = cast("RedisStoreConfig | MemoryStoreConfig",
                 getattr(config, "online_store", config))
    if store.type == "redis":
        from mercury.online.redis_store import RedisOnlineStore

        return RedisOnlineStore(store)
    if store.type == "memory":
        from mercury.online.memory_store import MemoryOnlineStore

        return MemoryOnlineStore(store)
    raise ValueError(f"online_store.type {store.type!r} has no backend")

"""The online store named by configuration (``online_store.type``)."""

from __future__ import annotations

from mercury.online.store import OnlineStore


def open_store(config) -> OnlineStore:
    """A backend for ``config`` (an ``OnlineStoreConfig``, or ``Settings``: its
    ``online_store``). No I/O: backends connect on first use."""
    config = getattr(config, "online_store", config)
    if config.type == "redis":
        from mercury.online.redis_store import RedisOnlineStore

        return RedisOnlineStore(config)
    if config.type == "memory":
        from mercury.online.memory_store import MemoryOnlineStore

        return MemoryOnlineStore(config)
    raise ValueError(f"online_store.type {config.type!r} has no backend")

"""Redis: the online store's local stand-in for ElastiCache."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any, cast

import redis

from mercury.stack.base import Component, Health, StackError

if TYPE_CHECKING:
    from mercury.config import RedisStoreConfig


class RedisServer(Component):
    name = "redis"
    start_timeout_s = 15.0

    def health(self) -> Health:
        cfg = self.settings.online_store
        if cfg.type != "redis":
            return Health(self.name, True, f"not used (online_store.type: {cfg.type})")
        where = f"{cfg.host}:{cfg.port}"
        try:
            info: dict[str, Any] = cast(dict[str, Any], redis.Redis(
                **cfg.connection_kwargs(), socket_timeout=2).info("server"))
        except redis.RedisError as exc:
            return Health(self.name, False, f"no answer at {where}: {exc}")
        return Health(self.name, True, f"{where} redis {info.get('redis_version')}")

    def launch(self) -> None:
        # Only launched for the Redis store: ``health`` says "not used" for any other.
        cfg = cast("RedisStoreConfig", self.settings.online_store)
        if cfg.host not in ("127.0.0.1", "localhost"):
            raise StackError(f"redis at {cfg.host}:{cfg.port} is down and is not local: "
                             "start it there, or fix online_store.host in the config")
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed: apt-get install redis-server")
        workdir = self.settings.data_dir / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        # Foreground (no --daemonize) so the pid we record is the server's own.
        self.spawn([binary, "--bind", "127.0.0.1", "--port", str(cfg.port), "--save", "",
                    "--appendonly", "no", "--dir", str(workdir)], "redis.log")

"""TLS to Redis and Postgres: what every client is built with, production's refusal of
plaintext, and proof on the local (plaintext) servers that the settings reach the wire."""

from __future__ import annotations

import psycopg
import pytest
import redis
import yaml
from psycopg.conninfo import conninfo_to_dict

from mercury.config import (
    CONFIG_DIR,
    ConfigError,
    PostgresConfig,
    RedisStoreConfig,
    load_settings,
)
from mercury.online.redis_store import RedisOnlineStore


def _production(tmp_path, monkeypatch, **changes) -> None:
    raw = yaml.safe_load((CONFIG_DIR / "production.yaml").read_text())
    for section, values in changes.items():
        raw[section].update(values)
    path = tmp_path / "production.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MERCURY_CONFIG", str(path))


def test_local_stays_plaintext_on_this_machine(tmp_settings):
    assert tmp_settings.online_store.connection_kwargs() == {
        "host": "127.0.0.1", "port": 6379, "password": None}
    info = conninfo_to_dict(tmp_settings.postgres.conninfo())
    assert (info["host"], info["sslmode"], "sslrootcert" in info) == \
        ("127.0.0.1", "prefer", False)


def test_production_encrypts_and_verifies_both(monkeypatch):
    monkeypatch.delenv("MERCURY_CONFIG", raising=False)
    monkeypatch.setenv("MERCURY_PROFILE", "production")
    settings = load_settings()
    kwargs = settings.online_store.connection_kwargs()
    assert (kwargs["ssl"], kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == \
        (True, "required", True)
    for database in (settings.postgres, settings.ops_state.connection(settings.postgres)):
        info = conninfo_to_dict(database.conninfo())
        assert info["sslmode"] == "verify-full" and info["sslrootcert"].endswith(".pem")


@pytest.mark.parametrize("changes, setting", [
    ({"online_store": {"ssl": False}}, "online_store.ssl"),
    ({"online_store": {"ssl_cert_reqs": "none"}}, "online_store.ssl_cert_reqs"),
    ({"postgres": {"sslmode": "require"}}, "postgres.sslmode"),
    ({"postgres": {"sslmode": "disable"}}, "postgres.sslmode"),
    # The users' data keys have their own connection: it is held to the same rule.
    ({"privacy": {"user_keys_postgres": {"host": "keys.db.internal", "sslmode": "require"}}},
     "privacy.user_keys_postgres.sslmode"),
    # So have the operational records (deployments, replay ledgers).
    ({"ops_state": {"postgres": {"host": "ops.db.internal", "sslmode": "prefer"}}},
     "ops_state.postgres.sslmode"),
])
def test_production_refuses_plaintext_naming_the_setting(tmp_path, monkeypatch, changes,
                                                         setting):
    _production(tmp_path, monkeypatch, **changes)
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        load_settings()


def test_every_redis_client_is_built_with_tls():
    """Catches a client built from host and port alone (the blocking one, the asyncio one)."""
    config = RedisStoreConfig(host="cache.internal", ssl=True, ssl_ca_certs="/etc/ca.pem")
    store = RedisOnlineStore(config)
    for client in (store.client, store.async_client):  # lazy: nothing connects yet
        pool = client.connection_pool
        assert "SSL" in pool.connection_class.__name__
        assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
        assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert pool.connection_kwargs["ssl_check_hostname"] is True


def test_the_settings_reach_the_wire_on_the_local_servers():
    """The local servers speak plaintext only: a client that really asks for TLS fails, one
    that asks for nothing connects. Catches settings that never reach the connection."""
    plain = RedisStoreConfig()
    assert redis.Redis(**plain.connection_kwargs(), socket_timeout=2).ping()
    tls = RedisStoreConfig(ssl=True)
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):  # no TLS handshake
        redis.Redis(**tls.connection_kwargs(), socket_timeout=1, retry_on_timeout=False).ping()
    with psycopg.connect(PostgresConfig().conninfo("postgres")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(PostgresConfig(sslmode="verify-full").conninfo("postgres"))

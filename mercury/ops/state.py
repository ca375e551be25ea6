"""The shared store of operational records: Flink deployment records and dead-letter replay
ledgers, in Postgres (``ops_state`` in the settings; RDS/Aurora in production).

An Airflow task may be retried on another worker, so nothing it must find again can live on
a worker's disk. A worker changes a job's record or a stream's ledger only while it holds
that name's lock (``held``), so two workers never submit the same job or produce the same
dead letter twice. Design notes: docs/STREAMING.md, "Operational state".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.sql import Identifier

    from mercury.config import Settings

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.flink_deployments (
    job_name              text PRIMARY KEY,
    job_id                text NOT NULL,
    py_file               text NOT NULL,
    args                  text[] NOT NULL,
    deployed_at_ms        bigint NOT NULL,
    restored_from         text,
    last_savepoint        text,
    last_savepoint_job_id text,
    last_checkpoint       text,
    stopped_at_ms         bigint,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {schema}.dlq_replay_ledger (
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    log_id      text NOT NULL,  -- which event log: a wiped local log reuses positions
    stream      text NOT NULL,
    dlq_id      text NOT NULL,
    event_id    text,
    rule        text NOT NULL,
    position    text,  -- NULL where the producer does not report one (Kafka)
    replayed_at timestamptz NOT NULL,
    PRIMARY KEY (log_id, stream, dlq_id)
);
"""
# Concurrent "CREATE ... IF NOT EXISTS" can still collide in the catalog: one at a time.
_SCHEMA_LOCK = 0x6F707301  # arbitrary advisory lock ids ("ops" 1, "ops" 2)
_NAMED_LOCKS = 0x6F707302


class LockWaitTimeout(Exception):
    """Another worker held the lock longer than ``ops_state.lock_wait_s``."""


def connect(settings: Settings) -> Connection:
    """An autocommit connection to the store, its tables created if missing. A worker that
    vanishes without closing its socket is noticed by the server's keepalives within about
    two minutes, which ends its session and frees its locks."""
    import psycopg
    from psycopg import sql

    config = settings.ops_state
    conn = psycopg.connect(config.connection(settings.postgres).conninfo(), autocommit=True)
    try:
        conn.execute("SET tcp_keepalives_idle = 60; SET tcp_keepalives_interval = 10; "
                     "SET tcp_keepalives_count = 6")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(sql.SQL(_DDL).format(schema=sql.Identifier(config.schema_name)))
    except BaseException:
        conn.close()
        raise
    return conn


def table(settings: Settings, name: str) -> Identifier:
    """The schema-qualified name of one of the store's tables, for ``psycopg.sql``."""
    from psycopg import sql

    return sql.Identifier(settings.ops_state.schema_name, name)


@contextmanager
def held(conn: Connection, settings: Settings, kind: str, name: str,
         on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock on ``kind``/``name`` (e.g. one job's deployment) for the block. When
    another worker holds it, call ``on_wait`` and wait at most ``ops_state.lock_wait_s``.
    The lock is the session's, so it survives the block's own commits, and Postgres frees it
    if the connection drops (a worker that dies mid-deploy blocks nobody for long)."""
    import psycopg

    key = (_NAMED_LOCKS, f"{settings.ops_state.schema_name}:{kind}:{name}")
    [[free]] = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", key)
    if not free:
        if on_wait is not None:
            on_wait()
        wait_ms = int(settings.ops_state.lock_wait_s * 1000)
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (str(wait_ms),))
        try:
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
        except psycopg.errors.LockNotAvailable as exc:
            raise LockWaitTimeout(
                f"another worker has held the {kind} lock of {name!r} for over "
                f"{settings.ops_state.lock_wait_s:g}s (ops_state.lock_wait_s)") from exc
        finally:
            conn.execute("SELECT set_config('lock_timeout', '0', false)")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)

"""Postgres: the profile database whose changes reach the online store through CDC.

Logical replication needs ``wal_level = logical``; ``ensure_up`` sets it with ALTER SYSTEM and
restarts the cluster when needed, and creates the platform's database.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import psycopg
from psycopg import sql

from mercury.stack.base import Component, Health, StackError

CLUSTERS_DIR = Path("/etc/postgresql")


class PostgresServer(Component):
    name = "postgres"
    start_timeout_s = 30.0

    def _query(self, database: str, statement: str):
        with psycopg.connect(self.settings.postgres.conninfo(database), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchone() if cursor.description else None

    def health(self) -> Health:
        cfg = self.settings.postgres
        where = f"{cfg.host}:{cfg.port}"
        try:
            with psycopg.connect(cfg.conninfo("postgres"), autocommit=True) as conn:
                (wal_level,) = cast("tuple[Any, ...]",  # SHOW always answers one row
                                    conn.execute("SHOW wal_level").fetchone())
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                      (cfg.database,)).fetchone()
        except psycopg.Error as exc:
            return Health(self.name, False, f"no connection at {where}: {str(exc).strip()}")
        if wal_level != "logical":
            return Health(self.name, False, f"{where} has wal_level={wal_level}; CDC needs "
                                            "logical (`make up` sets it and restarts)")
        if not exists:
            return Health(self.name, False, f"{where} has no database {cfg.database!r} "
                                            "(`make up` creates it)")
        return Health(self.name, True, f"{where} wal_level=logical database={cfg.database}")

    def ensure_up(self) -> Health:
        if not self._answers():
            self.launch()
            self._wait_answers()
        (wal_level,) = self._query("postgres", "SHOW wal_level")
        if wal_level != "logical":
            self._query("postgres", "ALTER SYSTEM SET wal_level = 'logical'")
            self._cluster_ctl("restart")
            self._wait_answers()
        self._create_database()
        return self.wait_healthy()

    def launch(self) -> None:
        self._cluster_ctl("start")

    def _answers(self) -> bool:
        try:
            self._query("postgres", "SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _wait_answers(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if time.monotonic() > deadline:
                raise StackError(f"postgres does not accept connections at "
                                 f"{self.settings.postgres.host}:{self.settings.postgres.port}")
            time.sleep(0.5)

    def _create_database(self) -> None:
        name = self.settings.postgres.database
        with psycopg.connect(self.settings.postgres.conninfo("postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _cluster_ctl(self, action: str) -> None:
        cfg = self.settings.postgres
        if cfg.host not in ("127.0.0.1", "localhost"):
            raise StackError(f"postgres at {cfg.host}:{cfg.port} is not local; cannot {action} it")
        if shutil.which("pg_ctlcluster") is None or not CLUSTERS_DIR.is_dir():
            raise StackError("postgres is not installed here: apt-get install postgresql")
        version = sorted(p.name for p in CLUSTERS_DIR.iterdir())[-1]
        done = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main",
                               action], capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"pg_ctlcluster {version} main {action} failed: "
                             f"{done.stderr.strip() or done.stdout.strip()}")
        if action == "start":
            # pg_ctlcluster daemonises: record the postmaster so that `down` stops a cluster
            # this stack started, and only such a cluster.
            self._record_postmaster(version)

    def _record_postmaster(self, version: str) -> None:
        pidfile = Path(f"/var/lib/postgresql/{version}/main/postmaster.pid")
        try:
            self.pids.write(self.name, int(pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass

"""Shared fixtures. Tests that need the real local stack use the session fixtures from
``tests.stack_fixtures`` (one Flink cluster per run) and ``tests.lake_fixtures``; Airflow
worlds start from ``tests.airflow_fixtures``' one migrated metadata database."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
import yaml

from mercury.config import CONFIG_DIR, load_settings

pytest_plugins = ["tests.stack_fixtures", "tests.lake_fixtures", "tests.airflow_fixtures"]
OPS_SCHEMAS: list[str] = []  # handed out by write_config, dropped when the session ends


@pytest.fixture(scope="session", autouse=True)
def _drop_ops_schemas():
    yield
    if not OPS_SCHEMAS:
        return
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(load_settings("local").postgres.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.SQL(", ").join(map(sql.Identifier, OPS_SCHEMAS))))
    except psycopg.OperationalError:
        pass  # no Postgres in this run: no schema was made either


def write_config(tmp_path: Path, **overrides) -> Path:
    """A copy of the local config with every data path inside ``tmp_path``."""
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["data_dir"] = str(tmp_path / "data")
    raw["event_log"]["root"] = str(tmp_path / "eventlog")
    raw["lake"]["warehouse"] = str(tmp_path / "lake")
    raw["warehouse"]["duckdb_path"] = str(tmp_path / "warehouse.duckdb")
    raw["airflow"]["home"] = str(tmp_path / "airflow")
    raw["retrieval"]["index"]["path"] = str(tmp_path / "vectors")
    # The operational store is a shared Postgres: each config gets a schema of its own.
    schema = f"ops_test_{uuid.uuid4().hex[:12]}"
    raw.setdefault("ops_state", {})["schema_name"] = schema
    OPS_SCHEMAS.append(schema)
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    path = tmp_path / "mercury.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def tmp_settings(tmp_path, monkeypatch):
    """Settings of the local profile, writing only under this test's temporary folder."""
    monkeypatch.setenv("MERCURY_CONFIG", str(write_config(tmp_path)))
    return load_settings()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_samples(path: Path) -> dict[tuple[str, frozenset], float]:
    """The samples of a Prometheus text file: (name, its labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(path.read_text())
            for s in family.samples}

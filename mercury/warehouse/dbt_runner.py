"""Running the dbt project (``dbt/``) with the bindings of the current config.

dbt runs in a subprocess of the current interpreter, so each run gets a clean process (dbt and
dbt-duckdb keep module-level state, and DuckDB locks its file per process) and its own
environment. ``profiles.yml`` holds no paths or secrets: this module passes the DuckDB file and
the lake catalog from config as ``MERCURY_*`` environment variables; Snowflake credentials come
from the caller's environment (``SNOWFLAKE_*``) or ``env_extra``.

Build artefacts and logs go under ``<data_dir>/dbt/<target>/``, never into the repository, so
runs against different configs (tests, a developer's stack) do not share a target folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mercury.config import REPO_ROOT, Settings, load_settings

DBT_PROJECT_DIR = REPO_ROOT / "dbt"
TARGETS = ("local", "snowflake")
# Statuses in run_results.json that mean a node did not do its job ("warn" is not one).
FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})


class DbtError(RuntimeError):
    """dbt could not do what was asked."""


class DbtRunError(DbtError):
    """dbt exited with an error; ``failed`` names the nodes that failed and why."""

    def __init__(self, result: DbtResult):
        self.result = result
        if result.failed:
            detail = "; ".join(f"{n.unique_id} ({n.status}): {n.message}" for n in result.failed)
        else:
            detail = "no node failed, so dbt stopped before running any:\n" + _tail(result.output)
        super().__init__(f"dbt {' '.join(result.args)} (target {result.target}) failed with "
                         f"exit code {result.returncode}: {detail}")

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        return self.result.failed


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    status: str
    message: str

    @property
    def name(self) -> str:
        """The node's own name: ``test.<project>.<name>.<hash>`` ends with a hash."""
        parts = self.unique_id.split(".")
        if parts[0] == "test" and len(parts) >= 4:
            return parts[2]
        return parts[-1]


@dataclass(frozen=True)
class DbtResult:
    args: tuple[str, ...]
    target: str
    returncode: int
    nodes: tuple[NodeResult, ...]  # from run_results.json; empty for commands without nodes
    output: str  # stdout and stderr of the dbt process
    target_path: Path

    @property
    def success(self) -> bool:
        return self.returncode == 0

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        return tuple(n for n in self.nodes if n.status in FAILED_STATUSES)

    def summary(self) -> str:
        """One line: the command, the target and how many nodes ended in each status."""
        counts = Counter(n.status for n in self.nodes)
        statuses = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
        return (f"dbt {' '.join(self.args)} (target {self.target}): exit {self.returncode}"
                f"{f'; {statuses}' if statuses else ''}")

    def status_of(self, name: str) -> str | None:
        """Status of the node whose unique id ends with ``name`` (model, test or unit test)."""
        for node in self.nodes:
            if node.unique_id == name or node.name == name:
                return node.status
        return None


def dbt_env(settings: Settings, target: str = "local",
            env_extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a dbt run gets: the caller's, plus the project, target and bindings."""
    return {**os.environ, **dbt_bindings(settings, target), **(env_extra or {})}


def dbt_bindings(settings: Settings, target: str = "local") -> dict[str, str]:
    """Only what this config adds to the caller's environment (no secrets): the project,
    target, artefact folders and, for the local target, the DuckDB file and lake catalog.
    Airflow's dbt tasks (cosmos) get these on top of the worker's own environment."""
    from mercury.lake.tables import catalog_properties

    if target not in TARGETS:
        raise ValueError(f"dbt target {target!r} is not one of {', '.join(TARGETS)}")
    run_root = Path(settings.data_dir) / "dbt" / target
    env = {
        "DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_TARGET": target,
        "DBT_TARGET_PATH": str(run_root / "target"),
        "DBT_LOG_PATH": str(run_root / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
    }
    if target == "local":
        duckdb_path = settings.warehouse.duckdb_path
        if duckdb_path is None:
            raise ValueError("config warehouse.duckdb_path is not set; the local target needs it")
        Path(duckdb_path).parent.mkdir(parents=True, exist_ok=True)
        lake = catalog_properties(settings)
        if lake["type"] == "sql":  # the sqlite catalog cannot be opened in a missing folder
            Path(settings.lake.warehouse).mkdir(parents=True, exist_ok=True)
        env.update({
            "MERCURY_DUCKDB_PATH": str(duckdb_path),
            "MERCURY_LAKE_CATALOG_TYPE": lake["type"],
            "MERCURY_LAKE_CATALOG_URI": lake.get("uri", ""),
            "MERCURY_LAKE_WAREHOUSE": lake["warehouse"],
        })
    return env


def run_dbt(args: Sequence[str], target: str = "local",
            env_extra: Mapping[str, str] | None = None, *, settings: Settings | None = None,
            check: bool = True, timeout: float | None = 900) -> DbtResult:
    """Run ``dbt <args>`` (e.g. ``["build"]``) on ``target``; raise DbtRunError on failure
    unless ``check`` is false."""
    settings = settings or load_settings()
    env = dbt_env(settings, target, env_extra)
    target_path = Path(env["DBT_TARGET_PATH"])
    run_results = target_path / "run_results.json"
    run_results.unlink(missing_ok=True)  # never read the results of an earlier run
    proc = subprocess.run([*_dbt_command(), *args], cwd=DBT_PROJECT_DIR,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)
    result = DbtResult(args=tuple(args), target=target, returncode=proc.returncode,
                       nodes=_read_run_results(run_results), output=proc.stdout + proc.stderr,
                       target_path=target_path)
    if check and not result.success:
        raise DbtRunError(result)
    return result


def _dbt_command() -> list[str]:
    """dbt of the current interpreter's environment (its console script, else the module)."""
    script = Path(sys.executable).parent / "dbt"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "dbt.cli.main"]


def _read_run_results(path: Path) -> tuple[NodeResult, ...]:
    if not path.is_file():
        return ()
    data = json.loads(path.read_text())
    return tuple(NodeResult(unique_id=r["unique_id"], status=str(r["status"]),
                            message=str(r.get("message") or ""))
                 for r in data.get("results", []))


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])

"""Airflow: ``airflow standalone`` (API server, scheduler, DAG processor, triggerer), the local
stand-in for MWAA.

Everything Airflow needs to know about this repository is in ``airflow_env``: the stack, the
DAG tests and ``airflow dags test`` all use it, so the three see the same DAGs, plugins and
connections.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from mercury.config import REPO_ROOT, Settings
from mercury.stack.base import Component, Health, StackError

MAIN_ENV_BIN = REPO_ROOT / ".venv" / "bin"
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")


def airflow_binary() -> Path:
    binary = MAIN_ENV_BIN / "airflow"
    if not binary.is_file():
        raise StackError(f"airflow is not installed in the main env ({binary}): run `make setup`")
    return binary


def airflow_env(settings: Settings, home: Path | None = None) -> dict[str, str]:
    """The environment every Airflow process of this repository runs with.

    ``home`` overrides AIRFLOW_HOME (tests use a temporary one, with its own SQLite database).
    """
    port = settings.airflow.api_port
    api_url = f"http://127.0.0.1:{port}"
    return {
        "AIRFLOW_HOME": str(home or settings.airflow.home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        # Airflow puts the plugins folder on sys.path: DAGs import `mercury_airflow...`.
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # The LocalExecutor starts one worker process per parallelism slot (32 by default):
        # far too many for a laptop that also runs Flink and Spark.
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow.parallelism),
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": str(settings.airflow.default_retry_delay_s),
        # Local use only: loopback, no login, everyone is admin.
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        # astronomer-cosmos (the warehouse_marts DAG): no usage telemetry leaves the machine,
        # and its caches (partial parse) stay under data_dir with the rest of the run.
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__COSMOS__CACHE_DIR": str(Path(settings.data_dir) / "cosmos"),
        # Connections come from the environment, never from the metadata database.
        "AIRFLOW_CONN_FLINK_DEFAULT": settings.flink.rest_url,
        # `airflow standalone` starts its components as `airflow ...` found on PATH.
        "PATH": f"{MAIN_ENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    }


class AirflowStandalone(Component):
    name = "airflow"
    # First start migrates the database and parses the DAGs: slow on two cores.
    start_timeout_s = 180.0

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.airflow.api_port}/api/v2/monitor/health"

    def health(self) -> Health:
        url = self.health_url
        try:
            response = requests.get(url, timeout=3)
            response.raise_for_status()
            report = response.json()
        except requests.RequestException as exc:
            return Health(self.name, False, f"API server not answering at {url}: "
                                            f"{type(exc).__name__}")
        except ValueError:
            return Health(self.name, False, f"{url} answered, but not with Airflow's health JSON "
                                            "(is another service on this port?)")
        status = {part: (report.get(key) or {}).get("status") or "absent"
                  for part, key in (("metadatabase", "metadatabase"), ("scheduler", "scheduler"),
                                    ("dag-processor", "dag_processor"),
                                    ("triggerer", "triggerer"))}
        detail = ", ".join(f"{part} {state}" for part, state in status.items())
        where = f"127.0.0.1:{self.settings.airflow.api_port}"
        needed = ("metadatabase", "scheduler", "dag-processor")
        ok = all(status[part] == "healthy" for part in needed)
        return Health(self.name, ok, f"{where} {detail}")

    def launch(self) -> None:
        binary = airflow_binary()
        env = airflow_env(self.settings)
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        # `standalone` migrates the database, then runs its components as children in our
        # new process group, so stopping the recorded pid's group stops them all.
        self.spawn([str(binary), "standalone"], "airflow.log", env=env, cwd=REPO_ROOT)

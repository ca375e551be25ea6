"""The warehouse_marts DAG's steps: what cosmos needs that only ``mercury`` knows.

- ``feature_versions``: the active version of each feature set the marts read (the online
  store's pointers), fixed once per run and handed to every dbt task by XCom.
- ``bind_dbt``: a cosmos interceptor, run by each dbt task just before it builds its command:
  the target from config, the ``MERCURY_*`` bindings of ``dbt_runner`` (the same env vars
  ``run_dbt`` gives dbt) and the run's feature versions as the project's var.

The paths below are where the DAG finds the project when it is parsed (no ``mercury`` import
then); tests/test_warehouse_marts_dag.py holds them to ``mercury.warehouse``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mercury_airflow.tasks import log_line
from mercury_airflow.tasks import settings as worker_settings

if TYPE_CHECKING:
    from mercury.config import Settings

Log = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parents[3]
DBT_PROJECT_DIR = REPO_ROOT / "dbt"
PROFILES_YML = DBT_PROJECT_DIR / "profiles.yml"
NODES_FILE = DBT_PROJECT_DIR / "cosmos" / "warehouse_marts.jsonl"
# dbt of the worker's own environment: the one the DAG's interpreter came with.
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"
PROFILE_NAME = "mercury"
VERSIONS_TASK = "feature_versions"


def feature_versions(settings: Settings, *, log: Log = log_line) -> dict[str, int]:
    """{feature set: active version} for the sets the marts read; raises (naming each set)
    when one has no active version or one whose history the dbt project does not declare."""
    from mercury.online.factory import open_store
    from mercury.warehouse import marts

    store = open_store(settings)
    try:
        versions = marts.served_versions(store, marts.mart_feature_sets(),
                                         marts.declared_histories())
    finally:
        store.close()
    log("marts read the active versions: "
        + ", ".join(f"{name} v{version}" for name, version in versions.items()))
    return versions


def bind_dbt(context: Any, operator: Any) -> None:
    """cosmos interceptor: bind this dbt task to the config's warehouse and the run's
    feature versions (called in the task, never at parse time)."""
    from mercury.warehouse.dbt_runner import dbt_bindings
    from mercury.warehouse.marts import mart_vars

    config = worker_settings()
    target = config.warehouse.dbt_target
    env = dbt_bindings(config, target)
    # cosmos runs each task in its own copy of the project and reads the run's artefacts
    # (compiled SQL, the freshness report) from that copy's target/; a shared target folder
    # would also mix the run results of tasks running side by side.
    env.pop("DBT_TARGET_PATH")
    operator.env = {**(operator.env or {}), **env}
    operator.profile_config = dataclasses.replace(operator.profile_config, target_name=target)
    versions = context["ti"].xcom_pull(task_ids=VERSIONS_TASK)
    if not versions:
        raise RuntimeError(f"no feature versions from the {VERSIONS_TASK!r} task of this run")
    operator.vars = {**(operator.vars or {}), **mart_vars(versions)}

"""The lake and feature marts as Airflow builds them (``dags/warehouse_marts.py``, cosmos).

- ``NODES_FILE``: the ``dbt ls`` output of the marts' selection, committed beside the dbt
  project. cosmos renders one Airflow task per node from it when the DAG is parsed, without
  running dbt (a parse must stay under a second). ``write_nodes`` regenerates it;
  ``check_nodes`` fails when a change to the project left it stale.
- ``served_versions``: which version of each feature set's history the marts read: the version
  the online store's active pointer serves (the one ``feature_backfill`` promoted), never a
  hand-bumped default. ``mart_vars`` turns them into the project's var.

Design and the run's shape: docs/BATCH.md, "The marts in Airflow".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mercury.warehouse.dbt_runner import DBT_PROJECT_DIR, run_dbt

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.online.store import OnlineStore

# The lake's staging and everything built on the feature history (the audit side has its own
# DAG, audit_warehouse).
SELECTION = ("source:lake+", "source:features+")
NODES_FILE = DBT_PROJECT_DIR / "cosmos" / "warehouse_marts.jsonl"
# The keys cosmos asks `dbt ls` for when it runs it itself (cosmos.dbt.graph.run_dbt_ls).
LS_KEYS = ("name", "unique_id", "resource_type", "depends_on", "original_file_path", "tags",
           "config", "freshness", "fqn")
VERSIONS_VAR = "feature_history_versions"
HISTORY_SOURCES = DBT_PROJECT_DIR / "models" / "staging" / "features" / "_features__sources.yml"
_HISTORY_TABLE = re.compile(r"^(?P<set>[a-z][a-z0-9_]*)_v(?P<version>[1-9][0-9]*)$")


class MartsError(Exception):
    """The marts cannot be built as asked; the message says what to fix."""


# ---- the rendered graph -------------------------------------------------------------------


def list_nodes(settings: Settings) -> str:
    """``dbt ls`` of the selection as JSON lines (the project's default vars)."""
    # Unit tests are left out: cosmos has no task for them, and `dbt test --select <model>`
    # (the model's test task) runs them anyway.
    result = run_dbt(["ls", "--quiet", "--select", *SELECTION, "--exclude",
                      "resource_type:unit_test", "--output", "json",
                      "--output-keys", *LS_KEYS], settings=settings)
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    if not lines:
        raise MartsError(f"dbt ls --select {' '.join(SELECTION)} listed no node:\n"
                         f"{result.output[-2000:]}")
    return "\n".join(lines) + "\n"


def write_nodes(settings: Settings, path: Path = NODES_FILE) -> int:
    """Regenerate the nodes file; how many nodes it lists."""
    text = list_nodes(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return len(text.splitlines())


def check_nodes(settings: Settings, path: Path = NODES_FILE) -> int:
    """Raise MartsError naming the nodes that differ when the file is not what dbt lists now;
    else how many nodes it lists."""
    want = _by_id(list_nodes(settings))
    have = load_nodes(path) if path.is_file() else {}
    added = sorted(set(want) - set(have))
    removed = sorted(set(have) - set(want))
    changed = sorted(i for i in set(want) & set(have) if want[i] != have[i])
    if added or removed or changed:
        detail = "; ".join(f"{label}: {', '.join(ids)}" for label, ids in
                           (("new", added), ("gone", removed), ("changed", changed)) if ids)
        raise MartsError(f"{path} is stale ({detail}); run `mercury warehouse nodes` and "
                         "commit the file")
    return len(want)


def load_nodes(path: Path = NODES_FILE) -> dict[str, dict]:
    """The nodes file: unique id -> the node as dbt listed it."""
    return _by_id(path.read_text())


def _by_id(text: str) -> dict[str, dict]:
    nodes = (json.loads(line) for line in text.splitlines() if line.strip())
    return {node["unique_id"]: node for node in nodes}


def rendered_names(path: Path = NODES_FILE) -> dict[str, list[str]]:
    """Node names per resource type in the nodes file (model, test, source)."""
    names: dict[str, list[str]] = {}
    for node in load_nodes(path).values():
        names.setdefault(node["resource_type"], []).append(node["name"])
    return {kind: sorted(found) for kind, found in names.items()}


# ---- which feature versions the marts read ------------------------------------------------


def mart_feature_sets(project_dir: Path = DBT_PROJECT_DIR) -> tuple[str, ...]:
    """The feature sets whose history the marts read: the keys of the project's var."""
    project = yaml.safe_load((project_dir / "dbt_project.yml").read_text())
    default = (project.get("vars") or {}).get(VERSIONS_VAR)
    if not isinstance(default, dict) or not default:
        raise MartsError(f"{project_dir / 'dbt_project.yml'}: vars.{VERSIONS_VAR} must map "
                         "each feature set the marts read to a version")
    return tuple(sorted(default))


def declared_histories(sources: Path = HISTORY_SOURCES) -> dict[str, tuple[int, ...]]:
    """Versions per feature set whose history table the project declares as a source
    (``features.<set>_v<version>``)."""
    found: dict[str, list[int]] = {}
    for source in yaml.safe_load(sources.read_text()).get("sources", []):
        if source.get("name") != "features":
            continue
        for table in source.get("tables", []):
            if match := _HISTORY_TABLE.match(table["name"]):
                found.setdefault(match["set"], []).append(int(match["version"]))
    return {name: tuple(sorted(versions)) for name, versions in found.items()}


def served_versions(store: OnlineStore, sets: Sequence[str],
                    declared: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """The active version of each set, read from the online store's pointers in one round
    trip. Raises MartsError, naming every set at fault, when a set has no active version or
    its active version's history is not declared as a dbt source."""
    active = store.active_versions(list(sets))
    served: dict[str, int] = {}
    problems = []
    for name in sets:
        version = active.get(name)
        if version is not None and version in declared.get(name, ()):
            served[name] = version
        elif version is None:
            problems.append(f"{name}: no version is active (promote one: `mercury features "
                            f"promote {name} <version>` or the feature_backfill DAG)")
        elif version not in declared.get(name, ()):
            problems.append(f"{name}: v{version} is active but the dbt project declares no "
                            f"source features.{name}_v{version} (declared: "
                            f"{', '.join(f'v{v}' for v in declared.get(name, ())) or 'none'}); "
                            f"add it to {HISTORY_SOURCES.relative_to(DBT_PROJECT_DIR.parent)}")
    if problems:
        raise MartsError("the marts cannot follow the active versions: " + "; ".join(problems))
    return served


def mart_vars(versions: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """The dbt vars that make the staging models read these versions' history tables."""
    return {VERSIONS_VAR: dict(sorted(versions.items()))}

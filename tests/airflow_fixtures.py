"""Airflow in tests: DAG files parsed the way Airflow parses them, with the repository's
Airflow settings (the plugins folder on sys.path, the cluster policies loaded)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mercury.config import load_settings


@contextmanager
def parsed_dags(home: Path, dag_folder: Path) -> Iterator:
    """A ``DagBag`` of ``dag_folder`` (a folder or one file), parsed with a throwaway
    ``home``."""
    from mercury.stack.airflow_standalone import airflow_env

    env = airflow_env(load_settings("local"), home=home)
    env.pop("PATH")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        # Airflow adds the plugins folder to sys.path and imports the cluster policies when it
        # loads its settings; if another test imported airflow first, do both here.
        patch.syspath_prepend(env["AIRFLOW__CORE__PLUGINS_FOLDER"])
        from airflow import settings
        from airflow.dag_processing.dagbag import DagBag

        if "airflow_local_settings" not in sys.modules:
            settings.import_local_settings()
        yield DagBag(dag_folder=dag_folder)

"""Airflow in tests: DAG files parsed the way Airflow parses them, with the repository's
Airflow settings (the plugins folder on sys.path, the cluster policies loaded), and Airflow
homes whose metadata database is already migrated.

Loaded by tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mercury.config import REPO_ROOT, load_settings


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


def dags_test(dag_id: str, *args: str) -> list[str]:
    """`airflow dags test <dag_id> ...` parsing only the DAG's own file (``dags/<dag_id>.py``):
    without ``-f`` Airflow parses and serialises every DAG of the folder on each run."""
    # -f last: before a positional logical date, Airflow's parser refuses the date.
    return ["dags", "test", dag_id, *args, "-f", str(REPO_ROOT / "dags" / f"{dag_id}.py")]


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory) -> Path:
    """An Airflow metadata database (SQLite) migrated once per test run: `airflow db migrate`
    costs 20-30 s on two cores, and every `airflow dags test` world used to run its own."""
    from mercury.stack.airflow_standalone import airflow_binary, airflow_env
    from mercury.stack.base import StackError

    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    home = tmp_path_factory.mktemp("airflow_migrated")
    env = {**os.environ, **airflow_env(load_settings("local"), home=home)}
    migrated = subprocess.run([str(binary), "db", "migrate"], env=env, capture_output=True,
                              text=True, timeout=300, cwd=home)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return home / "airflow.db"


@pytest.fixture(scope="session")
def airflow_home(migrated_airflow_db) -> Callable[[Path], Path]:
    """``airflow_home(folder)``: ``folder`` made an Airflow home of its own (AIRFLOW_HOME),
    holding a fresh copy of the migrated database, so nothing is shared between tests."""

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_airflow_db, folder / "airflow.db")
        return folder

    return make


class WarmAirflow:
    """``airflow <args>`` run in one long-lived process (tests/airflow_driver.py) with ``env``:
    Airflow starts once, and what its tasks import (Spark, Great Expectations, torch and the
    embedding model) stays loaded from one `airflow dags test` run to the next. Each command
    is the CLI's own, parsed and run as `airflow` would; its output is kept in ``log_dir``."""

    def __init__(self, binary: Path, env: dict[str, str], cwd: Path, log_dir: Path):
        self.log_dir = log_dir
        self.runs = 0
        # The interpreter the `airflow` script runs with (its shebang's, beside it).
        python = binary.parent / "python"
        self._process = subprocess.Popen(
            [str(python), str(REPO_ROOT / "tests" / "airflow_driver.py")], env=env, cwd=cwd,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, *args: str, extra_env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Like ``subprocess.run([airflow, *args])``: the return code, and the command's
        output (stdout and stderr together) as ``stdout``."""
        import json
        import selectors

        self.runs += 1
        log = self.log_dir / f"airflow_{self.runs}.log"
        request = {"args": list(args), "env": extra_env or {}, "log": str(log)}
        assert self._process.stdin and self._process.stdout
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.close()
                raise subprocess.TimeoutExpired(["airflow", *args], timeout)
        answer = self._process.stdout.readline()
        output = log.read_text(errors="replace") if log.exists() else ""
        if not answer:
            raise RuntimeError(f"the Airflow process died (exit {self._process.wait()}): "
                               f"{output[-3000:]}")
        return subprocess.CompletedProcess(["airflow", *args], json.loads(answer)["returncode"],
                                           output, "")

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin
            self._process.stdin.close()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@pytest.fixture
def warm_airflow() -> Iterator[Callable[..., WarmAirflow]]:
    """``warm_airflow(binary, env, cwd, log_dir)``: a ``WarmAirflow`` stopped when the test
    ends, passed or not."""
    started: list[WarmAirflow] = []

    def start(*args, **kwargs) -> WarmAirflow:
        started.append(WarmAirflow(*args, **kwargs))
        return started[-1]

    yield start
    for airflow in started:
        airflow.close()

"""Where the Flink distribution lives: the apache-flink package of the Flink env
(infra/envs/flink), its scripts and jars, and the JDK that runs them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mercury.config import REPO_ROOT
from mercury.errors import StackError

FLINK_ENV = REPO_ROOT / "infra" / "envs" / "flink" / ".venv"
SETUP_HINT = "run `make setup`"


def flink_python() -> Path:
    """The Flink env's interpreter (PyFlink jobs, and their tests, run with it)."""
    return FLINK_ENV / "bin" / "python"


def flink_home() -> Path:
    """The apache-flink package inside the Flink env: it holds bin/, lib/, opt/ and conf/."""
    candidates = sorted(FLINK_ENV.glob("lib/python3*/site-packages/pyflink"))
    for home in candidates:
        if (home / "bin" / "start-cluster.sh").is_file():
            return home
    raise StackError(f"the Flink env is missing or incomplete (no pyflink/bin/start-cluster.sh "
                     f"under {FLINK_ENV}): {SETUP_HINT}")


def flink_python_jar() -> Path:
    """The flink-python jar: the program REST submissions of PyFlink jobs run."""
    jars = sorted((flink_home() / "opt").glob("flink-python-*.jar"))
    if not jars:
        raise StackError(f"no flink-python jar in {flink_home() / 'opt'}: {SETUP_HINT}")
    return jars[-1]


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError("java is not installed: Flink 2.3 needs a JDK 17 on PATH or in "
                         "JAVA_HOME (apt-get install openjdk-17-jre-headless)")
    return found

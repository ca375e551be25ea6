"""Runs the PyFlink tests (tests/flink) in the Flink env, from the main suite.

PyFlink cannot be installed next to Airflow and Spark, so those tests need the Flink env's
interpreter; this test runs them there as a subprocess and asserts they passed.
"""

from __future__ import annotations

import subprocess

import pytest

from mercury.config import REPO_ROOT
from mercury.ops.flink_dist import flink_python


@pytest.mark.slow
def test_pyflink_tests_pass_in_the_flink_env():
    python = flink_python()
    if not python.is_file():
        pytest.skip(f"no Flink env at {python}: run `make setup`")
    run = subprocess.run(
        [str(python), "-m", "pytest", "tests/flink", "-q", "-rs",
         # Not the main suite's conftest (it imports main-env packages), no cache writes,
         # and no complaint about main-env pytest plugins' settings in pyproject.toml.
         "--confcutdir", "tests/flink", "-p", "no:cacheprovider",
         "-W", "ignore::pytest.PytestConfigWarning"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    report = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert " passed" in run.stdout and "skipped" not in run.stdout, report

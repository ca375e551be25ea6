"""The Airflow component's cheap parts. Starting `airflow standalone` itself takes ~30 s and
four processes on two cores, so the suite does not; `airflow dags test` in test_dags.py runs
the same environment for real."""

from __future__ import annotations

import socket

from mercury.config import REPO_ROOT
from mercury.stack.airflow_standalone import AirflowStandalone, airflow_env


def test_airflow_env_binds_this_repository(tmp_settings, tmp_path):
    env = airflow_env(tmp_settings, home=tmp_path / "home")
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(REPO_ROOT / "plugins")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(tmp_settings.airflow.parallelism)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == str(tmp_settings.airflow.api_port)
    assert env["AIRFLOW_CONN_FLINK_DEFAULT"] == tmp_settings.flink.rest_url
    assert airflow_env(tmp_settings)["AIRFLOW_HOME"] == str(tmp_settings.airflow.home)


def test_health_names_the_reason_when_nothing_answers(tmp_settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = tmp_settings.model_copy(
        update={"airflow": tmp_settings.airflow.model_copy(update={"api_port": port})})
    health = AirflowStandalone(settings).health()
    assert not health.ok
    assert "not answering" in health.detail and str(port) in health.detail

"""Bad input to any command exits non-zero with a message that says what to fix."""

import subprocess
import sys

from tests.conftest import free_port, write_config


def _mercury(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mercury.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_unknown_option_exits_2_with_usage():
    done = _mercury("generate", "--evnts", "10")
    assert done.returncode == 2 and "unrecognized arguments: --evnts" in done.stderr


def test_bad_knob_names_the_knob():
    done = _mercury("generate", "--duplicate-rate", "2", "--no-postgres")
    assert done.returncode == 1 and "duplicate_rate must be within [0, 1]" in done.stderr


def test_bad_config_names_the_file_and_field(tmp_path, monkeypatch):
    env = {**_env(), "MERCURY_CONFIG": str(write_config(tmp_path, flink={"rest_ur": "x"}))}
    done = _mercury("stack", "status", env=env)
    assert done.returncode == 1
    assert "flink.rest_ur: Extra inputs are not permitted" in done.stderr
    assert str(tmp_path / "mercury.yaml") in done.stderr


def test_a_service_that_is_down_is_reported_with_what_is_wrong(tmp_path):
    port = free_port()  # nothing listens there
    env = {**_env(), "MERCURY_CONFIG": str(write_config(tmp_path, online_store={"port": port}))}
    done = _mercury("stack", "status", "--only", "redis", env=env)
    assert done.returncode == 1
    assert f"FAIL redis     no answer at 127.0.0.1:{port}" in done.stdout


def test_unknown_stack_component_is_refused(tmp_path):
    env = {**_env(), "MERCURY_CONFIG": str(write_config(tmp_path))}
    done = _mercury("stack", "status", "--only", "kafka", env=env)
    assert done.returncode == 1 and "unknown component(s) kafka" in done.stderr


def test_generate_without_postgres_tells_how_to_fix(tmp_path):
    env = {**_env(), "MERCURY_CONFIG": str(write_config(tmp_path,
                                                        postgres={"port": free_port()}))}
    done = _mercury("generate", "--events", "100", env=env)
    assert done.returncode == 1 and "make up" in done.stderr and "--no-postgres" in done.stderr


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "MERCURY_CONFIG"}

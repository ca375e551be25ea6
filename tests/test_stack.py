"""The local stack stops only what it started, found by pid."""

import subprocess

import redis

from mercury.config import load_settings
from mercury.stack.base import PidFiles, pid_alive
from mercury.stack.redis_server import RedisServer
from tests.conftest import free_port, write_config


def test_redis_started_by_the_stack_is_stopped_by_it(tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("MERCURY_CONFIG", str(write_config(tmp_path, online_store={"port": port})))
    settings = load_settings()
    component = RedisServer(settings)
    assert not component.health().ok
    health = component.ensure_up()
    assert health.ok and f"127.0.0.1:{port}" in health.detail
    (pid,) = PidFiles(settings.run_dir).alive("redis")
    assert redis.Redis(port=port).ping()
    assert component.stop() == f"redis: stopped pid {pid}"
    assert not pid_alive(pid) and not component.health().ok


def test_a_service_the_stack_did_not_start_is_left_running(tmp_path, monkeypatch):
    port = free_port()
    outside = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        monkeypatch.setenv("MERCURY_CONFIG",
                           str(write_config(tmp_path, online_store={"port": port})))
        component = RedisServer(load_settings())
        component.wait_healthy()
        assert component.stop() == "redis: not started by this stack, left running"
        assert outside.poll() is None and component.health().ok
    finally:
        outside.terminate()
        outside.wait(10)

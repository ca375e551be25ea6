"""Kill the context API mid-load: every request that got a response has exactly one audit
record once a new process has recovered the spool and the lake has loaded the stream.

The real service runs as ``mercury serve`` (uvicorn, one process) over a private Redis; the
first process ships nothing by itself (``audit_ship_interval_s`` 3600), so every audit record
of the run must come through the recovery of a dead process's spool. The lake loader then
validates the stream into ``audit.inference_requests``, keyed by request id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from mercury.privacy.keys import load_keys
from mercury.serving.auth import service_token
from mercury.serving.demo import wait_ready
from mercury.serving.local_idp import issue_assertion
from tests.conftest import free_port
from tests.serving_fixtures import build_served_world

CALLER = "llm-gateway"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    served = build_served_world(tmp_path_factory.mktemp("audited"))
    yield served
    served.redis.stop()


def _config(world, tmp_path: Path, port: int, ship_interval_s: float) -> Path:
    raw = yaml.safe_load(world.config_path.read_text())
    raw["serving"] = {"port": port, "audit_ship_interval_s": ship_interval_s}
    path = tmp_path / f"serve-{ship_interval_s}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _serve(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MERCURY_CONFIG": str(config)}
    return subprocess.Popen([sys.executable, "-m", "mercury.cli", "serve"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _wait_ready(port: int, proc: subprocess.Popen, log: Path) -> None:
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=60)
    except RuntimeError as exc:
        pytest.fail(f"{exc}: {log.read_text()[-2000:]}")


def _load(port: int, world, keys, answered: list, stop: threading.Event) -> None:
    """One closed-loop client: a fresh request id of its own per call; the id the server
    minted for it recorded when answered."""
    token = service_token(keys, CALLER)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        i = 0
        while not stop.is_set():
            user = world.users[i % len(world.users)]
            rid = uuid.uuid4().hex
            headers = {"authorization": f"Bearer {token}", "x-request-id": rid,
                       "x-user-assertion": issue_assertion(world.settings, user, CALLER)}
            question = ("why was my card declined?", "summarize my spending")[i % 2]
            try:
                reply = client.post("/v1/context", headers=headers,
                                    json={"user_id": user, "question": question})
            except httpx.HTTPError:
                time.sleep(0.01)  # the server is gone: keep trying until told to stop
                continue
            if reply.status_code == 200:
                minted = reply.json()["request_id"]
                assert minted != rid  # the server mints the audit key; the caller's is kept
                answered.append((minted, rid))
            i += 1


def test_killed_mid_load_every_answered_request_has_exactly_one_audit_row(world, tmp_path):
    from mercury.lake import tables
    from mercury.lake.load import load_stream
    from mercury.serving.runtime import spool_dir

    keys = load_keys(world.settings)
    port, log = free_port(), tmp_path / "serve.log"
    first = _serve(_config(world, tmp_path, port, ship_interval_s=3600), log)
    _wait_ready(port, first, log)
    answered: list[str] = []
    stop = threading.Event()
    clients = [threading.Thread(target=_load, args=(port, world, keys, answered, stop))
               for _ in range(4)]
    for c in clients:
        c.start()
    while len(answered) < 150:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # mid-load: no shutdown hook runs
    first.wait(10)
    stop.set()
    for c in clients:
        c.join(10)
    spooled = sum(p.stat().st_size for p in spool_dir(world.settings).glob("*.jsonl"))
    assert spooled > 0, "the killed process should have left its spool behind"

    second = _serve(_config(world, tmp_path, port, ship_interval_s=0.1), log)
    try:
        _wait_ready(port, second, log)
        deadline = time.monotonic() + 30
        while any(spool_dir(world.settings).glob("*.jsonl")) and time.monotonic() < deadline:
            # Only the live process's current segment may remain once the orphan is shipped.
            if len(list(spool_dir(world.settings).glob("*.jsonl"))) == 1:
                break
            time.sleep(0.1)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(20)

    settings = world.settings
    report = load_stream(settings, "inference_audit")
    assert not report.dead_letters, report.summary()
    lake = tables.read(settings, "inference_audit")
    rows = lake.column("request_id").to_pylist()
    assert len(rows) == len(set(rows)), "the lake holds one row per request id"
    callers_ids = dict(zip(rows, lake.column("caller_request_id").to_pylist(), strict=True))
    assert all(callers_ids.get(minted) == rid for minted, rid in answered
               if minted in callers_ids)
    missing = {minted for minted, _ in answered} - set(rows)
    assert not missing, f"{len(missing)} answered requests have no audit row, e.g. " \
                        f"{sorted(missing)[:3]}"
    assert len(answered) >= 150

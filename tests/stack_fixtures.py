"""Session fixtures over the real local stack: one Flink cluster per test run.

Loaded by tests/conftest.py. A cluster that was already running is used and left running; a
cluster this fixture started is stopped when the session ends.
"""

from __future__ import annotations

import pytest

from mercury.config import load_settings
from mercury.stack.base import StackError


@pytest.fixture(scope="session")
def flink_cluster():
    """The local Flink cluster (a FlinkCluster component), up and healthy."""
    from mercury.ops.flink_dist import flink_home, java_binary
    from mercury.stack.flink_cluster import FlinkCluster

    # The repository's local profile, whatever MERCURY_CONFIG a test may have set meanwhile.
    cluster = FlinkCluster(load_settings("local"))
    try:
        flink_home()
        java_binary()
    except StackError as exc:
        pytest.skip(f"no local Flink: {exc}")
    started_here = not cluster.health().ok
    cluster.ensure_up()
    yield cluster
    if started_here:
        cluster.stop()


@pytest.fixture(scope="session")
def flink_rest(flink_cluster):
    """A REST client for that cluster."""
    from mercury.ops.flink_rest import FlinkRestClient

    return FlinkRestClient(flink_cluster.settings.flink.rest_url)

"""The keyed operator of the online-features job takes warm-started versions' seams from the
online store, and refuses to run a version that was never warm-started."""

from __future__ import annotations

import orjson
import pytest

pytest.importorskip("pyflink.table", reason="PyFlink lives in the Flink env "
                    "(infra/envs/flink/.venv); tests/test_flink_env.py runs these tests there")

from mercury.features.definition import dsl  # noqa: E402
from mercury.features.definition.compile import load_compiled  # noqa: E402
from mercury.features.executors.streaming.flink import _executor  # noqa: E402
from mercury.features.lifecycle import warm_start  # noqa: E402
from mercury.online.memory_store import MemoryOnlineStore  # noqa: E402

V1, V2 = load_compiled(["spending.v1", "spending.v2"])
SPECS = orjson.dumps([dsl.to_dict(V1), dsl.to_dict(V2)]).decode()


def test_the_operator_takes_its_seams_from_the_store():
    store = MemoryOnlineStore()
    with pytest.raises(warm_start.WarmStartMissing, match="spending.v2: no warm start"):
        _executor(SPECS, store, ["spending.v2"])
    store.put_values({warm_start.marker_key(V2): orjson.dumps({"cut_ms": 42})}, 60_000)
    executor = _executor(SPECS, store, ["spending.v2"])
    assert executor.seams["spending.v2"].cut_ms == 42 and "spending.v1" not in executor.seams
    assert _executor(SPECS).seams == {}
    with pytest.raises(ValueError, match=r"does not run: \['risk.v1'\]"):
        _executor(SPECS, store, ["risk.v1"])

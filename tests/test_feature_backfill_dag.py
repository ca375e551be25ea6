"""The feature_backfill DAG through `airflow dags test`, on a small lake and a private Redis.

One world for the module (lake of ``history_stream``, a private redis-server, an Airflow home
from the run's migrated database, and one Airflow process, ``WarmAirflow``, so that Airflow,
Spark and Great Expectations start once, not once per run), three runs in order:

1. ``spending`` v1, nothing active: the run succeeds and the pointer names v1;
2. ``spending`` v2 with the Spark side of the consistency gate given a broken definition
   (the documented test hook ``MERCURY_TEST_CONSISTENCY_COMPILED_DIR``; authorised spend counted
   on declined authorisations): the gate fails naming the feature, the run fails, ``promote``
   never runs, and the pointer still names v1;
3. ``spending`` v2 as defined: shadow-compared with v1, promoted, v1's keys scheduled to expire.

The GX gate blocking a promotion is shown without another Airflow run (the first costs ~1 min
here, the next ones 10-15 s): the checkpoint step on a range with no history raises, and the
DAG's wiring (all ``all_success``, promote after every gate) means a raising gate leaves
promote upstream_failed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mercury.config import Settings, load_settings
from mercury.stack.airflow_standalone import airflow_binary, airflow_env
from mercury.stack.base import StackError
from tests.airflow_fixtures import WarmAirflow, dags_test
from tests.conftest import write_config
from tests.feature_history_fixtures import history_stream
from tests.serving_fixtures import PrivateRedis
from tests.spark_fixtures import TEST_CONFIG

pytestmark = pytest.mark.slow

DAYS = 4


@dataclass
class World:
    settings: Settings
    airflow: WarmAirflow  # one Airflow process, Spark session and GX import for the 3 runs
    folder: Path
    first_day: date

    @property
    def last_day(self) -> date:
        return self.first_day + timedelta(days=DAYS)

    def trigger(self, conf: dict, extra_env: dict | None = None) -> str:
        # Each run's output is kept beside the world (airflow_<n>.log) for reading after a
        # failure (pytest prints only a tail).
        run = self.airflow.run(*dags_test("feature_backfill", "-c", json.dumps(conf)),
                               extra_env=extra_env)
        return run.stdout

    def active(self, set_name: str) -> int | None:
        from mercury.online.factory import open_store

        store = open_store(self.settings)
        try:
            return store.active_versions([set_name])[set_name]
        finally:
            store.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_home):
    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("feature_backfill")
    redis = PrivateRedis(folder)
    redis.start()
    try:
        spark = {"shuffle_partitions": TEST_CONFIG.shuffle_partitions,
                 "driver_memory": TEST_CONFIG.driver_memory, "conf": dict(TEST_CONFIG.conf)}
        config = write_config(folder, online_store={"port": redis.port}, spark=spark)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MERCURY_CONFIG", str(config))
            settings = load_settings()
        from mercury.lake import tables

        # Recent days, so that every arrival (30 h late ones included) is in the past and
        # the online hashes' TTLs (35 d) have not run out.
        first_day = datetime.now(UTC).date() - timedelta(days=DAYS + 2)
        tables.upsert(settings, "transactions", history_stream(first_day, DAYS))
        env = {**os.environ, **airflow_env(settings, home=airflow_home(folder / "airflow")),
               "MERCURY_CONFIG": str(config)}
        airflow = WarmAirflow(binary, env, cwd=folder, log_dir=folder)
        try:
            yield World(settings, airflow, folder, first_day)
        finally:
            airflow.close()
    finally:
        redis.stop()


def _conf(world: World, version: int, **extra) -> dict:
    return {"feature_set": "spending", "version": version,
            "start": world.first_day.isoformat(), "end": world.last_day.isoformat(), **extra}


def test_good_version_is_promoted(world):
    assert world.active("spending") is None
    output = world.trigger(_conf(world, 1))
    assert "state=success" in output and "state=failed" not in output, output[-6000:]
    assert "consistency gate" not in output or "below" not in output
    assert world.active("spending") == 1
    from mercury.features.definition.compile import load_one
    from mercury.features.offline import history

    rows = history.read(world.settings, load_one("spending.v1"), world.first_day, world.last_day)
    assert rows.num_rows > 0
    assert {d.isoformat() for d in rows["as_of_date"].to_pylist()} <= {
        (world.first_day + timedelta(days=i)).isoformat() for i in range(DAYS + 1)}


def test_broken_definition_fails_the_consistency_gate_and_blocks_promotion(world, tmp_path):
    from mercury.features.definition.compile import COMPILED_DIR

    assert world.active("spending") == 1  # from the previous test
    broken = tmp_path / "compiled"
    broken.mkdir()
    text = (COMPILED_DIR / "spending.v2.json").read_text()
    assert text.count('"APPROVED"') == 1
    (broken / "spending.v2.json").write_text(text.replace('"APPROVED"', '"DECLINED"'))
    output = world.trigger(_conf(world, 2),
                           extra_env={"MERCURY_TEST_CONSISTENCY_COMPILED_DIR": str(broken)})
    assert "state=failed" in output, output[-6000:]
    assert "consistency gate: spending.v2 is below 1.0 on authorised_amount" in output, \
        output[-6000:]
    assert "test hook MERCURY_TEST_CONSISTENCY_COMPILED_DIR is set" in output
    assert "spending.v1 -> spending.v2" not in output  # shadow_compare never ran
    assert "promote: spending now serves" not in output
    assert world.active("spending") == 1


def test_new_version_is_shadowed_promoted_and_old_keys_retired(world):
    from mercury.features.definition.compile import load_compiled
    from mercury.online import layout
    from mercury.online.factory import open_store

    output = world.trigger(_conf(world, 2))
    assert "state=success" in output and "state=failed" not in output, output[-6000:]
    assert "promote: spending now serves v2" in output
    assert "retire: spending.v1 keys expire in" in output
    assert world.active("spending") == 2
    (v1,) = load_compiled(["spending.v1"])
    store = open_store(world.settings)
    try:
        ttl = store.client.pttl(layout.entity_key(v1, "usr_0"))
    finally:
        store.close()
    # Expiring within the rollback window, not at its 35 d TTL any more.
    assert 0 < ttl <= world.settings.offline.retire_after_s * 1000


def test_history_checkpoint_refuses_an_empty_range_and_blocks_promote(world, monkeypatch):
    """The GX gate raising (no rows) is what stops a run; the DAG never promotes past it
    (every task all_success, promote after every gate: tests/test_dags.py)."""
    from airflow.sdk.exceptions import AirflowFailException

    from mercury.config import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    from mercury_airflow.tasks.feature_backfill import GateFailed, check_history_range

    from mercury.features.definition.compile import digest, load_one
    from mercury.features.definition.dsl import to_dict
    from mercury.features.offline import history

    spending = load_one("spending.v1")
    history.ensure_table(world.settings, spending)  # when run alone
    empty_day = world.first_day - timedelta(days=30)
    plan = {"feature_set": "spending", "version": 1, "start": empty_day.isoformat(),
            "end": empty_day.isoformat(), "cut_ms": 0, "previous_version": None,
            "promote": True, "spec": to_dict(spending), "digest": digest(spending)}
    with pytest.raises(GateFailed, match=r"expect_table_row_count_to_be_between") as failed:
        check_history_range(world.settings, plan)
    # Failed at once: Airflow does not retry a gate that said no.
    assert isinstance(failed.value, AirflowFailException)
    assert "observed_value': 0" in str(failed.value)


def test_plan_refuses_bad_params_and_a_rerun_after_promotion_retires_nothing(world, monkeypatch):
    """Bad params fail in ``plan`` naming the problem; planning v2 again once it serves finds
    no previous version, so a re-run (or a retry of retire) can never expire the served keys."""
    from mercury.config import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    from mercury_airflow.tasks import feature_backfill as steps
    from mercury_airflow.tasks.feature_backfill import ParamsInvalid, promote, retire_previous

    today = datetime.now(UTC).date()
    good = _conf(world, 2)

    def plan_backfill(params, log=lambda _: None):
        return steps.plan_backfill(world.settings, params, today=today, log=log)

    with pytest.raises(ParamsInvalid, match="is not over yet"):
        plan_backfill({**good, "end": today.isoformat()})
    with pytest.raises(ParamsInvalid, match="start='2024-13-01' is not a date"):
        plan_backfill({**good, "start": "2024-13-01"})
    with pytest.raises(ParamsInvalid, match="before start"):
        plan_backfill({**good, "start": world.last_day.isoformat(),
                       "end": world.first_day.isoformat()})
    with pytest.raises(ParamsInvalid, match=r"spending\.v9.*compiled: .*spending\.v2"):
        plan_backfill({**good, "version": 9})

    assert world.active("spending") == 2  # promoted by the previous test
    lines: list[str] = []
    plan = plan_backfill(good, log=lines.append)
    assert plan["previous_version"] is None and plan["cut_ms"] > 0
    assert retire_previous(world.settings, plan, log=lines.append) == {"retired": None}
    assert promote(world.settings, plan, log=lines.append)["promoted"] is True
    assert world.active("spending") == 2
    from mercury.online.factory import open_store

    store = open_store(world.settings)
    try:
        # Promoting the served version again records nothing: one rollback still reaches v1.
        assert store.pointer_history("spending") == [1]
    finally:
        store.close()

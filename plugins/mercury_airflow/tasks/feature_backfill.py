"""The feature_backfill DAG's steps: thin glue over the batch path of ``mercury.features``.

One run takes one feature-set version from "defined" to "serving" (``dags/feature_backfill.py``):

1. ``plan_backfill``: validates the run's params (a compiled spec for the version, a range of
   days that have ended) and fixes what every later step must agree on: the warm-start cut
   (the ``cut_ms`` param, else the newest arrival of the set's stream in the lake) and the
   version active before the run (to shadow-compare with, and to retire after the flip).
2. ``backfill_history``: ``history.backfill`` in Spark for [start, end] (incremental: only days
   whose values can have changed since the last run are rewritten).

The Spark steps (2, 4 and 5) run where ``spark_submit`` says (``mercury_airflow.hooks.
spark_submit``): in this process on ``local[2]`` locally, as EMR Serverless job runs of the
``spark_jobs`` entry points in production, pinned to the plan's spec digest.
3. ``check_history_range``: the Great Expectations checkpoint on the history rows of the range
   (``mercury.features.offline.history_checks``). Before the warm start, so a bad history never
   writes an online key.
4. ``warm_start_online``: ``warm_start.backfill_online`` at the cut: the version's online keys
   and per-entity bootstrap state, from which the streaming job continues.
5. ``consistency_gate``: ``consistency_job.measure_online`` of the version's online hashes
   against the Spark recompute from the lake, as of the cut; fails below
   ``settings.offline.consistency_min_share`` on any feature, naming it.
6. ``shadow_compare``: the new version against the active one (``bluegreen.shadow_compare``):
   informative, except that a feature the two versions define identically must not differ.
7. ``promote``: ``bluegreen.promote`` flips the active pointer; ``retire_previous`` then
   schedules the expiry of the previous version's keys after ``settings.offline.retire_after_s``
   (the rollback window: ``mercury features rollback`` within it is one step).

Every step is safe to retry: the plan travels by XCom, so a retried step sees the same cut
and previous version; each step overwrites what it writes (history partitions by day, online
hashes by key, the pointer by name) or only reads. Each step prints one line per result and
returns plain values for XCom. Importing this module is cheap: mercury's Spark, GX and Redis
code is imported by the functions that use them.

Test hook (never set in production): ``MERCURY_TEST_CONSISTENCY_COMPILED_DIR`` names a folder
of compiled specs (``<name>.v<version>.json``, as in ``mercury/features/compiled``) from which
the consistency gate's *Spark* side loads the version's definition instead of the real one.
It is how tests show that a definition broken in one executor fails the gate through
``airflow dags test``; the gate logs a warning line whenever it is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from mercury_airflow.hooks.spark_submit import run_spark
from mercury_airflow.tasks import log_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from mercury.config import Settings
    from mercury.features.definition.dsl import FeatureSet

Log = Callable[[str], None]

TEST_CONSISTENCY_DIR_ENV = "MERCURY_TEST_CONSISTENCY_COMPILED_DIR"


class GateFailed(AirflowFailException):
    """A promotion gate said no; the message names the gate and what failed. An
    ``AirflowFailException``: the task fails at once, without the retries meant for
    transient errors (the same data gives the same answer)."""


class ParamsInvalid(AirflowFailException, ValueError):
    """The run's params cannot make a plan (no such version, a bad range); fails at once."""


@dataclass(frozen=True)
class BackfillPlan:
    """What one run does, fixed once by ``plan_backfill`` and shared by every step (by XCom).

    It carries the compiled definitions themselves, not their names: every step runs the
    definition the run started with, even if the compiled files change under a running DAG,
    and the digest in the plan (and in each step's log) proves which one ran."""

    feature_set: str  # set name, e.g. "spending"
    version: int
    start: str  # ISO dates, inclusive
    end: str
    cut_ms: int  # warm-start cut and the as-of time of the gates
    previous_version: int | None  # active before this run; None if none (or this one)
    promote: bool
    spec: dict  # the version's compiled spec (dsl.to_dict)
    digest: str  # its SHA-256 (compile.digest)
    previous_spec: dict | None = None  # the previous version's, for the shadow compare

    @property
    def ref(self) -> str:
        return f"{self.feature_set}.v{self.version}"

    @property
    def start_date(self) -> date:
        return date.fromisoformat(self.start)

    @property
    def end_date(self) -> date:
        return date.fromisoformat(self.end)

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> BackfillPlan:
        return cls(**value)

    def definition(self) -> FeatureSet:
        """The pinned definition; refuses a spec that is not the one the plan fixed."""
        from mercury.features.definition.compile import digest
        from mercury.features.definition.dsl import feature_set_from_dict

        feature_set = feature_set_from_dict(self.spec)
        if digest(feature_set) != self.digest:
            raise ParamsInvalid(f"{self.ref}: the plan's spec does not match its digest "
                                f"{self.digest[:12]}; plan the run again")
        return feature_set

    def previous_definition(self) -> FeatureSet | None:
        from mercury.features.definition.dsl import feature_set_from_dict

        return None if self.previous_spec is None else feature_set_from_dict(self.previous_spec)


def _as_date(value: Any, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ParamsInvalid(f"param {name}={value!r} is not a date (YYYY-MM-DD)") from None


def _store(settings: Settings):
    from mercury.online.factory import open_store

    return open_store(settings)


def plan_backfill(settings: Settings, params: Mapping[str, Any], *, today: date,
                  log: Log = log_line) -> dict[str, Any]:
    """Validate the run's params and fix the plan (see the module doc); the plan as a dict.
    ``today`` is the run's date (its ``run_after``), never the clock's. Params that cannot
    make a plan raise ``ParamsInvalid`` (no retry: they will not improve)."""
    from mercury.features.definition import dsl
    from mercury.features.definition.compile import CompileError, digest, load_one

    name, version = str(params["feature_set"]), int(params["version"])
    try:
        feature_set = load_one(f"{name}.v{version}")
    except CompileError as exc:  # names the versions that do exist
        raise ParamsInvalid(str(exc)) from exc
    start, end = _as_date(params["start"], "start"), _as_date(params["end"], "end")
    if end < start:
        raise ParamsInvalid(f"{feature_set.ref}: end {end} is before start {start}")
    if end >= today:
        raise ParamsInvalid(f"{feature_set.ref}: end {end} is not over yet (today is {today} "
                            "UTC); a history day is written once it has ended")
    cut_ms = params.get("cut_ms")
    if cut_ms is None:
        from mercury.features.lifecycle.warm_start import newest_arrival_ms

        cut_ms = newest_arrival_ms(settings, feature_set)
        if cut_ms is None:
            raise ParamsInvalid(f"{feature_set.ref}: the lake has no "
                                f"{feature_set.source.stream} events, so there is nothing to "
                                "warm-start from; pass cut_ms")
    with _store(settings) as store:
        previous = store.active_versions([name])[name]
    previous = None if previous == version else previous
    previous_spec = None
    if previous is not None:
        try:
            previous_spec = dsl.to_dict(load_one(f"{name}.v{previous}"))
        except CompileError:  # served, but no longer compiled: nothing to shadow-compare with
            log(f"plan: {name}.v{previous} serves but has no compiled spec; no shadow compare")
    plan = BackfillPlan(feature_set=name, version=version, start=start.isoformat(),
                        end=end.isoformat(), cut_ms=int(cut_ms), previous_version=previous,
                        promote=bool(params.get("promote", True)),
                        spec=dsl.to_dict(feature_set), digest=digest(feature_set),
                        previous_spec=previous_spec)
    log(f"plan: {plan.ref} (spec {plan.digest[:12]}) history {plan.start}..{plan.end}, "
        f"cut {plan.cut_ms} "
        f"({datetime.fromtimestamp(plan.cut_ms / 1000, UTC).isoformat()}), active before: "
        f"{'v' + str(previous) if previous is not None else 'none'}, promote: {plan.promote}")
    return plan.to_xcom()


def spark_session(settings: Settings) -> SparkSession:
    """The settings' Spark session (reused when this process already runs one)."""
    from mercury.features.executors.spark.session import session

    return session(settings.spark)


def backfill_history(settings: Settings, plan: Mapping[str, Any], *,
                     spark: SparkSession | None = None, log: Log = log_line) -> dict[str, Any]:
    """``history.backfill`` of the range: rewrites only the days whose values changed since
    the last run, so a retry after a partial run finishes the rest and writes nothing twice."""
    from mercury.batch import jobs

    pinned = BackfillPlan.from_xcom(plan)

    def here() -> dict[str, Any]:
        from mercury.features.offline import history

        result = history.backfill(spark or spark_session(settings), settings,
                                  pinned.definition(), pinned.start_date, pinned.end_date,
                                  progress=log)
        return {"days_written": result.days_written, "rows": result.rows,
                "skipped_days": result.skipped_days}

    job = jobs.backfill(pinned.ref, pinned.start_date, pinned.end_date, digest=pinned.digest)
    return {"ref": pinned.ref, **run_spark(settings, job, here, log=log)}


def check_history_range(settings: Settings, plan: Mapping[str, Any], *,
                        log: Log = log_line) -> dict[str, Any]:
    """The GX checkpoint on the history rows of the range; raises ``GateFailed`` (naming each
    failed expectation with examples) so the run stops before the warm start. Only reads."""
    from mercury.features.offline.history_checks import HistoryCheckFailed, check_history

    plan = BackfillPlan.from_xcom(plan)
    try:
        outcome = check_history(settings, plan.definition(), plan.start_date,
                                plan.end_date)
    except HistoryCheckFailed as exc:
        raise GateFailed(f"history checkpoint: {exc}; not promoting") from exc
    statistics = outcome.statistics
    log(f"history checkpoint: {plan.ref} {plan.start}..{plan.end}: "
        f"{statistics.get('successful_expectations')} of "
        f"{statistics.get('evaluated_expectations')} expectations met")
    return {"ref": plan.ref, "evaluated": statistics.get("evaluated_expectations"),
            "successful": statistics.get("successful_expectations")}


def warm_start_online(settings: Settings, plan: Mapping[str, Any], *,
                      spark: SparkSession | None = None, log: Log = log_line) -> dict[str, Any]:
    """``warm_start.backfill_online`` at the plan's cut: every entity's state from lake events
    that arrived by the cut, overwriting the version's keys, so a retry writes the same."""
    from mercury.batch import jobs

    pinned = BackfillPlan.from_xcom(plan)

    def here() -> dict[str, Any]:
        from mercury.features.lifecycle import warm_start

        with _store(settings) as store:
            result = warm_start.backfill_online(spark or spark_session(settings), settings,
                                                pinned.definition(), pinned.cut_ms, store,
                                                log=log)
        return {"entities": result.entities, "events": result.events}

    job = jobs.warm_start(pinned.ref, pinned.cut_ms, digest=pinned.digest)
    return {"ref": pinned.ref, "cut_ms": pinned.cut_ms,
            **run_spark(settings, job, here, log=log)}


def _executor_feature_set(plan: BackfillPlan, log: Log) -> FeatureSet | None:
    """The test hook (module doc): a different definition for the Spark side, or None."""
    folder = os.environ.get(TEST_CONSISTENCY_DIR_ENV)
    if not folder:
        return None
    from mercury.features.definition.compile import load_compiled

    (feature_set,) = load_compiled([plan.ref], directory=Path(folder))
    log(f"WARNING: test hook {TEST_CONSISTENCY_DIR_ENV} is set: Spark recomputes {plan.ref} "
        f"with the spec in {folder}, not the compiled one")
    return feature_set


def consistency_gate(settings: Settings, plan: Mapping[str, Any], *,
                     spark: SparkSession | None = None, log: Log = log_line) -> dict[str, Any]:
    """The version's online hashes against the Spark recompute as of the cut; raises
    ``GateFailed`` naming every feature below ``settings.offline.consistency_min_share``.
    Only reads."""
    from mercury.batch import jobs

    plan = BackfillPlan.from_xcom(plan)
    min_share = settings.offline.consistency_min_share
    if settings.spark_submit.type != "local":
        # The job run exits 1 below the share, so a failing gate fails the run and the task.
        job = jobs.consistency_online(plan.ref, as_of_ms=plan.cut_ms, min_share=min_share,
                                      sample=settings.offline.consistency_sample_entities)
        outcome = run_spark(settings, job, dict, log=log)
        return {"ref": plan.ref, "min_share": min_share, **outcome}
    from mercury.features.lifecycle.consistency import measure_online

    with _store(settings) as store:
        report = measure_online(spark or spark_session(settings), settings, plan.definition(),
                                store, as_of_ms=plan.cut_ms,
                                executor_feature_set=_executor_feature_set(plan, log),
                                progress=log)
    log(report.summary(min_share))
    if not report.passes(min_share):
        failing = ", ".join(f"{s.feature} ({s.share:.4f})" if s.share is not None
                            else s.feature for s in report.failing_features(min_share))
        raise GateFailed(f"consistency gate: {plan.ref} is below {min_share} on {failing}; "
                         "not promoting.\n" + report.summary(min_share))
    return {"ref": plan.ref, "score": report.score, "min_share": min_share}


def shadow_compare(settings: Settings, plan: Mapping[str, Any], *,
                   log: Log = log_line) -> dict[str, Any]:
    """The new version beside the active one (``bluegreen.shadow_compare``, as of its own
    default: the newest event time either version holds). Differences in features the versions
    define differently are expected (that is why there is a new version) and only reported; a
    feature defined identically in both must have identical values, else ``GateFailed``.
    Skipped when no other version is active. Only reads."""
    from mercury.features.lifecycle import bluegreen

    plan = BackfillPlan.from_xcom(plan)
    old = plan.previous_definition()
    if old is None:
        log(f"shadow: no other version of {plan.feature_set} is active; nothing to compare")
        return {"ref": plan.ref, "compared_with": None}
    new = plan.definition()
    with _store(settings) as store:
        report = bluegreen.shadow_compare(store, old, new,
                                          sample=settings.offline.consistency_sample_entities)
    log(report.summary())
    if not report.ok:
        raise GateFailed(f"shadow: {old.ref} and {new.ref} define "
                         f"{', '.join(report.differing_unchanged)} identically but their values "
                         "differ; not promoting")
    return {"ref": plan.ref, "compared_with": old.ref, "entities": report.entities,
            "changed": sorted(c.name for c in report.features.values()
                              if c.status != "unchanged")}


def promote(settings: Settings, plan: Mapping[str, Any], *, log: Log = log_line) -> dict[str, Any]:
    """``bluegreen.promote``: the active pointer names this version (setting it again on a
    retry changes nothing). With the ``promote`` param off, nothing flips."""
    from mercury.features.lifecycle import bluegreen

    plan = BackfillPlan.from_xcom(plan)
    if not plan.promote:
        log(f"promote: off for this run; {plan.ref} is ready but not active")
        return {"ref": plan.ref, "promoted": False}
    with _store(settings) as store:
        switch = bluegreen.promote(store, plan.feature_set, plan.version)
    log(f"promote: {plan.feature_set} now serves v{plan.version} ({switch.summary()})")
    return {"ref": plan.ref, "promoted": True, "before": switch.before}


def retire_previous(settings: Settings, plan: Mapping[str, Any], *,
                    log: Log = log_line) -> dict[str, Any]:
    """Schedule the expiry of the previous version's keys after
    ``settings.offline.retire_after_s`` (setting the same expiry again on a retry is
    harmless). Never the version the pointer names: nothing to do without a promotion, or
    when no other version was active."""
    from mercury.features.lifecycle import bluegreen

    plan = BackfillPlan.from_xcom(plan)
    previous = plan.previous_version
    if not plan.promote or previous is None:
        log(f"retire: nothing to retire for {plan.ref}")
        return {"retired": None}
    after_s = settings.offline.retire_after_s
    # bluegreen.retire refuses the served version itself (BlueGreenError).
    with _store(settings) as store:
        retirement = bluegreen.retire(store, plan.feature_set, previous, after_s)
    log(f"retire: {plan.feature_set}.v{previous} keys expire in {after_s} s "
        f"({retirement.summary()})")
    return {"retired": f"{plan.feature_set}.v{previous}", "keys": retirement.keys,
            "after_s": after_s}

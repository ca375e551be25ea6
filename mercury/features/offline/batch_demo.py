"""Step 10 of ``mercury demo``: the batch path on the demo's lake and audit trail.

1. the feature history of spending.v1 for every day the lake's transactions cover, in Spark
   (``mercury.features.offline.history``), then the same backfill again, which must compute nothing;
2. the consistency of what the context API served in step 9: every served value recomputed in
   Spark as of its logged time (``mercury.features.lifecycle.consistency.measure_served``), per
   feature; anything under ``offline.consistency_min_share`` fails the demo.
"""

from __future__ import annotations

import time
from typing import cast

from mercury.config import Settings

HISTORY_SET = "spending.v1"


def served_sets_in_the_lake(settings: Settings) -> list[str]:
    """The v1 sets (those step 9 serves) whose source stream the demo validated into the lake
    (profiles come from Postgres CDC, which the demo does not load into the lake)."""
    from mercury.contracts import registry
    from mercury.features.definition.compile import load_compiled
    from mercury.lake import tables

    catalog = tables.catalog(settings)
    return [fs.ref for fs in load_compiled() if fs.version == 1
            and catalog.table_exists(cast(str, registry.stream(fs.source.stream).lake_table))]


def run_batch_demo(settings: Settings, served_since_ms: int) -> list[str]:
    """The step's failures (empty when it all worked)."""
    from mercury.features.definition.compile import load_one
    from mercury.features.executors.spark.session import session, spark_config
    from mercury.features.lifecycle.consistency import measure_served
    from mercury.features.offline import history
    from mercury.lake import tables

    fs = load_one(HISTORY_SET)
    arrivals = tables.read(settings, fs.source.stream)[tables.ARRIVAL_FIELD].to_pylist()
    first = history.day_of(int(min(arrivals).timestamp() * 1000))
    last = history.day_of(int(max(arrivals).timestamp() * 1000))
    spark = session(spark_config(settings))
    problems: list[str] = []
    try:
        result = history.backfill(spark, settings, fs, first, last,
                                  progress=lambda line: print(f"  {line}", flush=True))
        print(f"history {history.table_identifier(settings, fs)}: {result.days_written} days, "
              f"{result.rows_written:,} entity-days in {result.seconds:.1f}s")
        again = history.backfill(spark, settings, fs, first, last)
        print(f"backfill again with nothing new: {again.days_written} days computed")
        if again.days_written:
            problems.append(f"history: a re-run with nothing new recomputed "
                            f"{again.days_written} days")
        measured = served_sets_in_the_lake(settings)
        print(f"consistency of the served sets whose stream is in the lake: {', '.join(measured)}")
        try:
            report = measure_served(spark, settings, served_since_ms,
                                    int(time.time() * 1000) + 1, set_refs=measured)
        except ValueError as exc:  # nothing served to compare: the context step failed
            return problems + [f"consistency of what was served: {exc}"]
    finally:
        spark.stop()
    print("\n".join(report.table()))
    minimum = settings.offline.consistency_min_share
    print(report.summary(minimum))
    if not report.passes(minimum):
        failing = [f"{score.ref}.{score.feature}" for score in report.failing_features(minimum)]
        problems.append(f"consistency of served features under {minimum:.0%}: "
                        f"{', '.join(failing) or 'nothing was compared'}")
    return problems

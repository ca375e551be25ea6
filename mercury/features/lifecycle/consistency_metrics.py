"""The consistency job's last score per feature, for Prometheus: a metrics file in
``metrics_dir`` (``mercury.metrics_file``) updated by every run of
``spark_jobs.consistency``.

- ``mercury_feature_consistency_share{feature_set,feature,kind}``: the share of compared
  values on which online (or served) and the Spark recompute agree, from the last run that
  compared that feature (``kind``: ``served`` or ``online``); ``FeatureConsistencyBelowTarget``
  alerts on it. A feature with nothing to compare keeps its previous value;
- ``mercury_feature_consistency_compared{feature_set,feature,kind}``: how many values that
  share rests on;
- ``mercury_feature_consistency_last_run_timestamp_seconds{kind}``: when the job last ran, so a
  job nobody runs is seen.

On EMR Serverless the driver's folder is not scraped: there the file's families go to the
Pushgateway (module doc of ``mercury.metrics_file``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mercury.metrics_file import GAUGE, Family, MetricsFile

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.features.lifecycle.consistency import ConsistencyReport

SHARE = Family("mercury_feature_consistency_share",
               "Share of compared values on which online and the recompute agree",
               ("feature_set", "feature", "kind"), GAUGE)
COMPARED = Family("mercury_feature_consistency_compared", "Values the share rests on",
                  ("feature_set", "feature", "kind"), GAUGE)
LAST_RUN = Family("mercury_feature_consistency_last_run_timestamp_seconds",
                  "When the consistency job last ran", ("kind",), GAUGE)


def record_report(settings: Settings, report: ConsistencyReport, finished_s: float) -> None:
    # A feature with nothing to compare has no share: it is left out, not written as 0.
    shares = {(s.ref, s.feature, report.kind): (s.share, s.total)
              for s in report.scores.values() if s.share is not None}
    MetricsFile(settings.metrics_dir / "feature_consistency.prom",
                (SHARE, COMPARED, LAST_RUN)).update(set_={
                    SHARE.name: {key: share for key, (share, _) in shares.items()},
                    COMPARED.name: {key: total for key, (_, total) in shares.items()},
                    LAST_RUN.name: {(report.kind,): finished_s}})

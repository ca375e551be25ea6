"""A batch job: which ``spark_jobs`` entry point runs, with which arguments.

The builders are the only place that spells an entry point's flags, so a job submitted to EMR
and the same job run locally get the same command line. Arguments are validated here, before
anything is uploaded or submitted: a wrong one is refused naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

ENTRY_POINTS = ("backfill", "warm_start", "training_set", "point_in_time", "consistency")
_REF = re.compile(r"^[a-z][a-z0-9_]*\.v[1-9][0-9]*(:[a-z][a-z0-9_]*)?$")


@dataclass(frozen=True)
class SparkJob:
    """``python -m spark_jobs.<entry_point> <arguments>``; ``name`` labels the job run."""

    entry_point: str
    arguments: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.entry_point not in ENTRY_POINTS:
            raise ValueError(f"entry_point {self.entry_point!r} is not one of "
                             f"{', '.join(ENTRY_POINTS)} (spark_jobs/)")

    @property
    def module(self) -> str:
        return f"spark_jobs.{self.entry_point}"

    @property
    def script(self) -> str:
        """The entry point's path inside the code package (and under its S3 prefix)."""
        return f"spark_jobs/{self.entry_point}.py"


def _ref(value: str, field: str) -> str:
    if not _REF.match(value):
        raise ValueError(f"{field} {value!r} is not a feature set ref (NAME.vN[:FEATURE])")
    return value


def backfill(ref: str, start: date, end: date, *, full: bool = False,
             digest: str | None = None) -> SparkJob:
    """History of ``ref`` for the days ``start..end``; ``digest`` pins the compiled spec."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    arguments = ["--feature-set", _ref(ref, "feature_set"), "--start", start.isoformat(),
                 "--end", end.isoformat()]
    if full:
        arguments.append("--full")
    if digest is not None:
        arguments += ["--spec-digest", digest]
    return SparkJob("backfill", tuple(arguments), f"backfill {ref} {start}..{end}")


def warm_start(ref: str, cut_ms: int, *, digest: str | None = None) -> SparkJob:
    """Online hashes and seam state of ``ref`` from lake arrivals up to ``cut_ms``."""
    if cut_ms < 0:
        raise ValueError(f"cut_ms {cut_ms} is negative")
    arguments = ["--feature-set", _ref(ref, "feature_set"), "--cut-ms", str(int(cut_ms))]
    if digest is not None:
        arguments += ["--spec-digest", digest]
    return SparkJob("warm_start", tuple(arguments), f"warm_start {ref} cut {cut_ms}")


def training_set(labels: str, refs: list[str], output: str, *,
                 timestamp_column: str | None = None) -> SparkJob:
    """Point-in-time training set of ``labels`` with the features of ``refs`` to ``output``."""
    if not refs:
        raise ValueError("feature_sets is empty: name at least one NAME.vN")
    arguments = ["--labels", labels,
                 "--feature-sets", ",".join(_ref(r, "feature_sets") for r in refs),
                 "--output", output]
    if timestamp_column:
        arguments += ["--timestamp-column", timestamp_column]
    return SparkJob("training_set", tuple(arguments), f"training_set {','.join(refs)}")


def consistency_online(ref: str, *, as_of_ms: int, min_share: float,
                       sample: int | None = None) -> SparkJob:
    """A version's online hashes against the Spark recompute as of ``as_of_ms``; the run
    fails (exit 1) below ``min_share`` on any feature."""
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share {min_share} is not between 0 and 1")
    arguments = ["online", "--feature-set", _ref(ref, "feature_set"),
                 "--as-of-ms", str(int(as_of_ms)), "--min-share", repr(float(min_share))]
    if sample is not None:
        arguments += ["--sample", str(int(sample))]
    return SparkJob("consistency", tuple(arguments), f"consistency online {ref}")


def consistency_served(since: str, until: str, *, refs: list[str] | None = None,
                       min_share: float | None = None) -> SparkJob:
    """Served values (the audit lake) in ``since..until`` (ISO times) against Spark."""
    arguments = ["served", "--since", since, "--until", until]
    for ref in refs or []:
        arguments += ["--feature-set", _ref(ref, "feature_set")]
    if min_share is not None:
        arguments += ["--min-share", repr(float(min_share))]
    return SparkJob("consistency", tuple(arguments), f"consistency served {since}..{until}")

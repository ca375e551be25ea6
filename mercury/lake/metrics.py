"""What each lake load did, for Prometheus: a metrics file per stream in ``metrics_dir``
(``mercury.metrics_file``), updated at the end of every successful load.

- ``mercury_stream_records_total{stream,validator}`` and
  ``mercury_dead_letters_total{stream,validator,rule}``: records validated and dead-lettered,
  the dead-letter SLI (infra/monitoring/rules/data_quality.yml); ``validator="lake_loader"``
  keeps these apart from the indexer's counts of its own stream;
- ``mercury_lake_rows_loaded_total{stream}``: rows new in the lake table;
- ``mercury_lake_load_last_success_timestamp_seconds{stream}``: when a load last finished,
  so a loader that stops running is seen (its counters would just stop moving).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from mercury.metrics_file import GAUGE, Family, MetricsFile

if TYPE_CHECKING:
    from mercury.config import Settings

VALIDATOR = "lake_loader"
RECORDS = Family("mercury_stream_records_total", "Records of a stream validated",
                 ("stream", "validator"))
DEAD_LETTERS = Family("mercury_dead_letters_total", "Records of a stream dead-lettered",
                      ("stream", "validator", "rule"))
ROWS_LOADED = Family("mercury_lake_rows_loaded_total", "Rows new in the stream's lake table",
                     ("stream",))
LAST_SUCCESS = Family("mercury_lake_load_last_success_timestamp_seconds",
                      "When a lake load of the stream last finished", ("stream",), GAUGE)


def metrics_file(settings: Settings, stream: str) -> MetricsFile:
    return MetricsFile(settings.metrics_dir / f"lake_load_{stream}.prom",
                       (RECORDS, DEAD_LETTERS, ROWS_LOADED, LAST_SUCCESS))


def record_load(settings: Settings, stream: str, *, read: int, inserted: int,
                dead_letters: Mapping[str, int], finished_s: float) -> None:
    metrics_file(settings, stream).update(
        add={RECORDS.name: {(stream, VALIDATOR): read},
             DEAD_LETTERS.name: {(stream, VALIDATOR, rule): n
                                 for rule, n in dead_letters.items()},
             ROWS_LOADED.name: {(stream,): inserted}},
        set_={LAST_SUCCESS.name: {(stream,): finished_s}})

"""Counters of short-lived processes (a lake load, an Airflow task, a Spark job), kept in a
metrics file in ``settings.metrics_dir``, the folder the node exporter's textfile collector
serves to Prometheus (job ``batch-metrics``).

A process that lives for one run cannot keep a counter in memory: the next run would start it
at zero again, and ``rate()`` would see a reset every run. So the file is the counter's state:
each update reads the file, adds, and writes it back, under a lock (Airflow tasks end in
parallel) and by rename (a scrape never reads half a file). Gauges are set, not added.

Production: the workers (MWAA, EMR Serverless) have no node exporter. There the same
families go to a Pushgateway (one grouping key per file name), or to the OpenTelemetry
collector's Prometheus receiver; ``monitoring.textfile_exporter_port`` becomes that target
in Prometheus's config and these files are not written. Counters there are pushed with
``pushadd`` from the same read-add-write state.
"""

from __future__ import annotations

import fcntl
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

COUNTER, GAUGE = "counter", "gauge"


@dataclass(frozen=True)
class Family:
    """One metric family a file holds. Counters are named ``..._total``."""
    name: str
    help: str
    labels: tuple[str, ...]
    kind: str = COUNTER

    def __post_init__(self) -> None:
        if self.kind not in (COUNTER, GAUGE):
            raise ValueError(f"{self.name}: kind must be counter or gauge, not {self.kind!r}")
        if (self.kind == COUNTER) != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")


Values = dict[tuple[str, ...], float]  # label values (in the family's order) -> value


class MetricsFile:
    """A ``.prom`` file of the given families; ``update`` adds to counters and sets gauges."""

    def __init__(self, path: Path, families: tuple[Family, ...]) -> None:
        if path.suffix != ".prom":
            raise ValueError(f"{path}: the textfile collector reads only *.prom files")
        self.path = path
        self.families = {f.name: f for f in families}

    def read(self) -> dict[str, Values]:
        """What the file holds now, per declared family (absent file: nothing)."""
        from prometheus_client.parser import text_string_to_metric_families

        values: dict[str, Values] = {name: {} for name in self.families}
        if not self.path.exists():
            return values
        for parsed in text_string_to_metric_families(self.path.read_text()):
            for sample in parsed.samples:
                family = self.families.get(sample.name)
                if family is not None:
                    key = tuple(sample.labels.get(label, "") for label in family.labels)
                    values[family.name][key] = sample.value
        return values

    def update(self, add: Mapping[str, Mapping[tuple[str, ...], float]] | None = None,
               set_: Mapping[str, Mapping[tuple[str, ...], float]] | None = None) -> None:
        with self._locked():
            values = self.read()
            for name, increments in (add or {}).items():
                self._check(name, COUNTER, increments)
                for key, amount in increments.items():
                    values[name][key] = values[name].get(key, 0.0) + amount
            for name, gauges in (set_ or {}).items():
                self._check(name, GAUGE, gauges)
                values[name].update(gauges)
            self._write(values)

    def _check(self, name: str, kind: str, values: Mapping[tuple[str, ...], float]) -> None:
        family = self.families.get(name)
        if family is None or family.kind != kind:
            raise ValueError(f"{self.path.name}: no {kind} named {name}")
        for key in values:
            if len(key) != len(family.labels):
                raise ValueError(f"{name}: labels {family.labels}, got values {key}")

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, values: dict[str, Values]) -> None:
        from prometheus_client import CollectorRegistry, write_to_textfile
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import Collector

        families = self.families

        class Snapshot(Collector):
            def collect(self):
                for name, family in families.items():
                    kind = CounterMetricFamily if family.kind == COUNTER else GaugeMetricFamily
                    metric = kind(name, family.help, labels=list(family.labels))
                    for key, value in sorted(values[name].items()):
                        metric.add_metric(list(key), value)
                    yield metric

        registry = CollectorRegistry()
        registry.register(Snapshot())
        write_to_textfile(str(self.path), registry)  # a temporary file, then a rename

"""The knowledge indexer's Prometheus metrics, written as a file in ``metrics_dir`` after every
batch and every idle heartbeat (the node exporter serves it; ``mercury.metrics_file``).

A file rather than a port because a dead indexer must still say something: its heartbeat
stays in the file, ages, and ``KnowledgeIndexerStalled`` fires; a port would just vanish.
The counters are the process's own (a restart resets them, which ``rate()`` handles).

- ``mercury_knowledge_indexer_heartbeat_timestamp_seconds``: the last batch or idle poll;
- ``mercury_knowledge_searchable_lag_seconds``: per indexed change, its ``updated_at`` to
  written in the index (the knowledge-freshness SLI reads ``le="300.0"``); a change replayed
  after a crash is observed again, late: rare, and then it was late;
- ``mercury_consumer_lag_messages{group,stream}`` is exported by the probe for every group,
  this one included (``mercury.monitoring.lag``);
- ``mercury_stream_records_total`` / ``mercury_dead_letters_total`` with
  ``validator="knowledge_indexer"``: the dead-letter SLI of ``knowledge_documents``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

METRICS_FILE = "knowledge_indexer.prom"  # in settings.metrics_dir
VALIDATOR = "knowledge_indexer"
# 300.0 is the SLO's threshold; the rest place the usual (seconds) and the outages.
LAG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class IndexerMetrics:
    def __init__(self, metrics_dir: Path, stream: str) -> None:
        self.path = metrics_dir / METRICS_FILE
        self.stream = stream
        self.registry = CollectorRegistry()
        self.heartbeat = Gauge("mercury_knowledge_indexer_heartbeat_timestamp_seconds",
                               "The indexer's last batch or idle poll", registry=self.registry)
        self.lag = Histogram("mercury_knowledge_searchable_lag_seconds",
                             "Document updated_at -> written in the index",
                             buckets=LAG_BUCKETS, registry=self.registry)
        self.records = Counter("mercury_stream_records_total", "Records of a stream validated",
                               ["stream", "validator"], registry=self.registry)
        self.dead_letters = Counter("mercury_dead_letters_total",
                                    "Records of a stream dead-lettered",
                                    ["stream", "validator", "rule"], registry=self.registry)
        self.records.labels(stream, VALIDATOR)  # zero from the start: rate() sees the first

    def batch(self, read: int, rejected: Mapping[str, int], updated_at_ms: Iterable[int],
              now_ms: int) -> None:
        self.records.labels(self.stream, VALIDATOR).inc(read)
        for rule, n in rejected.items():
            self.dead_letters.labels(self.stream, VALIDATOR, rule).inc(n)
        for updated_at in updated_at_ms:
            self.lag.observe(max(0.0, (now_ms - updated_at) / 1000))
        self.beat(now_ms)

    def beat(self, now_ms: int) -> None:
        self.heartbeat.set(now_ms / 1000)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(self.path), self.registry)  # a temporary file, then a rename

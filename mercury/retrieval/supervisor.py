"""The incremental indexer as a supervised process, like the other streaming jobs.

Locally it is a child of ``mercury knowledge indexer start`` (pid file in the run dir, log in
the log dir); in production it is a Kubernetes Deployment of the same command, one replica per
group of ``knowledge_documents`` partitions. Either way the ``knowledge_indexer`` DAG checks it
every five minutes: restarts it when it is down, and fails (alerting) when its heartbeat is
stale or its lag grows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mercury.config import Settings
from mercury.eventlog import group_lag
from mercury.retrieval.documents import STREAM
from mercury.retrieval.indexer import GROUP, load_status, now_ms, status_path
from mercury.stack.base import Component, Health

HEARTBEAT_STALE_MS = 30_000


@dataclass(frozen=True)
class IndexerHealth:
    running: bool
    heartbeat_age_ms: int | None
    lag: int | None  # changes in the stream the group has not committed yet
    status: dict | None

    @property
    def ok(self) -> bool:
        return self.running and self.heartbeat_age_ms is not None \
            and self.heartbeat_age_ms <= HEARTBEAT_STALE_MS

    def line(self) -> str:
        age = "never" if self.heartbeat_age_ms is None else f"{self.heartbeat_age_ms / 1000:.1f}s"
        return (f"indexer {'running' if self.running else 'DOWN'}, heartbeat {age} ago, "
                f"lag {self.lag if self.lag is not None else '?'} changes")


class KnowledgeIndexer(Component):
    name = "knowledge-indexer"
    start_timeout_s = 120.0  # loading the model takes ~20-30 s on this machine

    def health(self) -> Health:
        state = indexer_health(self.settings)
        return Health(self.name, state.ok, state.line())

    def launch(self) -> None:
        # A heartbeat left by the previous process must not pass for the new one's readiness.
        status_path(self.settings.data_dir).unlink(missing_ok=True)
        self.spawn([sys.executable, "-m", "mercury.cli", "knowledge", "index", "--follow"],
                   "knowledge-indexer.log")


def indexer_health(settings: Settings) -> IndexerHealth:
    running = bool(KnowledgeIndexer(settings).pids.alive(KnowledgeIndexer.name))
    status = load_status(settings.data_dir)
    age = None
    if status and status.get("heartbeat_ms"):
        age = now_ms() - status["heartbeat_ms"]
    return IndexerHealth(running, age, consumer_lag(settings), status)


def consumer_lag(settings: Settings) -> int:
    """Changes in the stream the indexer's group has not committed (``group_lag``: lines on
    the file log, high watermark minus committed offset on Kafka)."""
    return group_lag(settings, GROUP, [STREAM])

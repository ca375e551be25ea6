"""The knowledge_indexer DAG's steps: keep the incremental indexer up, and check it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mercury.config import Settings

# Changes waiting in the document stream beyond which answers get stale documents.
MAX_LAG = 5_000


def ensure_running(settings: Settings) -> str:
    """Start the indexer when it is down (in production its Deployment restarts it and this
    only checks). A restart resumes from the group's committed offsets."""
    from mercury.retrieval.supervisor import KnowledgeIndexer

    line = KnowledgeIndexer(settings).ensure_up().line()
    print(line, flush=True)
    return line


def check(settings: Settings, max_lag: int = MAX_LAG) -> dict[str, Any]:
    """Fail, naming the problem, when the heartbeat is stale (stuck) or more than
    ``max_lag`` changes wait in the stream (falling behind)."""
    from mercury.retrieval.supervisor import indexer_health

    health = indexer_health(settings)
    print(health.line(), flush=True)
    if not health.ok:
        raise RuntimeError(f"knowledge indexer unhealthy: {health.line()}")
    if health.lag is not None and health.lag > max_lag:
        raise RuntimeError(f"knowledge indexer falling behind: {health.lag} changes waiting "
                           f"(limit {max_lag})")
    return {"lag": health.lag, "heartbeat_age_ms": health.heartbeat_age_ms}

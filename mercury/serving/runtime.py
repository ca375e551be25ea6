"""Building the context API's process state from configuration (one place, so tests can
swap a part: a Redis client on a server they stop, a slow embedder, a missing index)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mercury.config import Settings
from mercury.eventlog import open_producer
from mercury.eventlog.factory import encode_record
from mercury.features.definition.compile import load_compiled
from mercury.features.reader import ContextReader
from mercury.online.factory import open_store
from mercury.privacy.keys import load_keys
from mercury.serving.app import Runtime
from mercury.serving.audit import AuditShipper, AuditSpool
from mercury.serving.auth import AssertionVerifier, RateLimiter
from mercury.serving.breaker import CircuitBreaker
from mercury.serving.context import ContextService
from mercury.serving.documents import DocumentFetcher
from mercury.serving.exposure import check_exposure
from mercury.serving.features import FeatureFetcher, SnapshotCache
from mercury.serving.metrics import Metrics
from mercury.serving.overload import LoopMonitor

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from mercury.features.definition.dsl import FeatureSet
    from mercury.online.store import OnlineStore
    from mercury.retrieval.embedding import Embedder
    from mercury.retrieval.retriever import Retriever


def spool_dir(settings: Settings) -> Path:
    return settings.data_dir / "serving" / "spool"


def default_retriever_factory(settings: Settings) -> Callable[[], Retriever]:
    def build() -> Retriever:
        from mercury.retrieval.embedding import open_embedder
        from mercury.retrieval.factory import open_index
        from mercury.retrieval.retriever import Retriever

        cfg = settings.retrieval
        embedders: dict[str, Embedder] = {}

        def embedder_for(name: str) -> Embedder:
            if name not in embedders:
                embedders[name] = open_embedder(name, cfg.embed_batch_size,
                                                threads=settings.serving.embed_threads)
            return embedders[name]

        return Retriever(open_index(cfg), cfg.alias, embedder_for,
                         cache_size=cfg.query_cache_size)
    return build


def build_runtime(settings: Settings, *, store: OnlineStore | None = None,
                  retriever_factory: Callable[[], Retriever] | None = None,
                  feature_sets: Sequence[FeatureSet] | None = None) -> Runtime:
    cfg = settings.serving
    keys = load_keys(settings)
    feature_sets = feature_sets if feature_sets is not None else load_compiled()
    check_exposure(feature_sets)
    metrics = Metrics()
    monitor = LoopMonitor(max_lag_ms=cfg.overload_lag_ms)
    features = FeatureFetcher(
        ContextReader(store if store is not None else open_store(settings), feature_sets),
        CircuitBreaker("redis", cfg.breaker_failures, cfg.breaker_reset_s),
        SnapshotCache(cfg.snapshot_max_users, cfg.snapshot_max_age_s * 1000), monitor)
    documents = DocumentFetcher(retriever_factory or default_retriever_factory(settings),
                                CircuitBreaker("index", cfg.breaker_failures,
                                               cfg.breaker_reset_s),
                                max_waiting=cfg.retrieval_queue, monitor=monitor,
                                cache_size=settings.retrieval.query_cache_size)
    spool = AuditSpool(spool_dir(settings))
    writer = "audit_" + re.sub(r"[^A-Za-z0-9_]", "_", spool.owner)
    shipper = AuditShipper(spool, open_producer(settings, writer_id=writer),
                           lambda stream, record: encode_record(settings, stream, record),
                           interval_s=cfg.audit_ship_interval_s)
    return Runtime(
        settings=settings, keys=keys,
        service=ContextService(cfg, keys, features, documents, spool, metrics),
        verifier=AssertionVerifier(keys, cfg.assertion_max_age_s),
        limiter=RateLimiter({c.name: (c.requests_per_s, c.burst) for c in cfg.callers}),
        callers=frozenset(c.name for c in cfg.callers), metrics=metrics, spool=spool,
        shipper=shipper, monitor=monitor, min_in_flight_to_shed=cfg.overload_min_in_flight)


def asgi_app() -> Starlette:
    """The uvicorn factory: ``uvicorn --factory mercury.serving.runtime:asgi_app``."""
    from mercury.config import load_settings
    from mercury.serving.app import create_app

    return create_app(lambda: build_runtime(load_settings()))

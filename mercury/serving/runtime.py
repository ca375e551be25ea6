"""Building the context API's process state from configuration (one place, so tests can
swap a part: a Redis client on a server they stop, a slow embedder, a missing index)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mercury.config import ServingConfig, Settings
from mercury.contracts import registry
from mercury.contracts.validation import validator
from mercury.eventlog import open_producer
from mercury.eventlog.factory import encode_record
from mercury.features.definition.compile import load_compiled
from mercury.features.offline.priors import has_prior
from mercury.features.reader import ContextReader
from mercury.online.factory import open_store
from mercury.privacy.keys import load_keys
from mercury.privacy.userkeys import open_user_keys
from mercury.serving.admission import Admission
from mercury.serving.app import Runtime
from mercury.serving.audit import AuditShipper, AuditSpool, RecordRejected
from mercury.serving.audit_sealing import AuditSealer
from mercury.serving.auth import RateLimiter
from mercury.serving.breaker import CircuitBreaker
from mercury.serving.context import ContextService
from mercury.serving.documents import DocumentFetcher
from mercury.serving.exposure import check_exposure
from mercury.serving.features import FeatureFetcher, SnapshotCache
from mercury.serving.identity import AssertionVerifier, load_jwks
from mercury.serving.metrics import Metrics
from mercury.serving.overload import LoopMonitor
from mercury.serving.priors import PriorBook
from mercury.serving.request import Limits
from mercury.serving.spool_keys import SpoolKeys

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


def breaker(name: str, cfg: ServingConfig) -> CircuitBreaker:
    return CircuitBreaker(name, cfg.breaker_min_calls, cfg.breaker_failure_rate,
                          cfg.breaker_window_s, cfg.breaker_reset_s)


def jwks_path(settings: Settings) -> Path:
    """The identity provider's published keys: configured, or the local stand-in's (made on
    first use, as the demo and the tests need an identity provider to exist)."""
    configured = settings.serving.identity.jwks_path
    if configured is not None:
        return configured
    from mercury.serving.local_idp import ensure_keys

    return ensure_keys(settings)


def contract_check(stream: str, record: dict[str, Any]) -> None:
    """An audit record against its stream's contract, before it is spooled."""
    verdict = validator(registry.stream(stream).schema_subject).validate(record)
    if not verdict.ok:
        raise RecordRejected(f"breaks the {stream} contract: {verdict.rule} at {verdict.field}")
    if verdict.dropped_fields:  # our own record: a bug to fix, not a field to drop quietly
        found = ", ".join(f"{path} ({rule})" for path, rule in verdict.dropped_fields)
        raise RecordRejected(f"carries undeclared sensitive fields: {found}")


def build_runtime(settings: Settings, *, store: OnlineStore | None = None,
                  retriever_factory: Callable[[], Retriever] | None = None,
                  feature_sets: Sequence[FeatureSet] | None = None) -> Runtime:
    cfg = settings.serving
    keys = load_keys(settings)
    feature_sets = feature_sets if feature_sets is not None else load_compiled()
    check_exposure(feature_sets)
    metrics = Metrics()
    monitor = LoopMonitor(max_lag_ms=cfg.overload_lag_ms)
    admission = Admission(cfg.max_in_flight, cfg.admission_wait_ms, cfg.admission_queue)
    online = store if store is not None else open_store(settings)
    features = FeatureFetcher(
        ContextReader(online, feature_sets), breaker("redis", cfg),
        SnapshotCache(cfg.snapshot_max_users, cfg.snapshot_max_age_s * 1000), monitor,
        store_deadline_s=cfg.features_deadline_ms / 1000, crowded=lambda: admission.crowded,
        priors=PriorBook(online, [(fs.name, fs.version) for fs in feature_sets
                                  if has_prior(fs)]))
    documents = DocumentFetcher(retriever_factory or default_retriever_factory(settings),
                                breaker("index", cfg), max_waiting=cfg.retrieval_queue,
                                monitor=monitor, cache_size=settings.retrieval.query_cache_size,
                                languages=settings.retrieval.languages,
                                store_deadline_s=cfg.retrieval_deadline_ms / 1000,
                                crowded=lambda: admission.crowded)
    spool = AuditSpool(spool_dir(settings), check=contract_check)
    sealer = AuditSealer(SpoolKeys(spool.folder, spool.owner, keys,
                                   settings.privacy.spool_key_max_messages),
                         open_user_keys(settings, keys), keys)
    writer = "audit_" + re.sub(r"[^A-Za-z0-9_]", "_", spool.owner)
    shipper = AuditShipper(spool, open_producer(settings, writer_id=writer),
                           lambda stream, record: encode_record(settings, stream, record),
                           interval_s=cfg.audit_ship_interval_s,
                           prepare=sealer.finish, prefetch=sealer.prefetch)
    identity = cfg.identity
    return Runtime(
        settings=settings, keys=keys,
        service=ContextService(cfg, keys, features, documents, spool, metrics, sealer),
        verifier=AssertionVerifier(load_jwks(jwks_path(settings)), identity.issuer,
                                   identity.max_lifetime_s, identity.clock_skew_s,
                                   identity.replay_cache_size),
        limiter=RateLimiter({c.name: (c.requests_per_s, c.burst) for c in cfg.callers}),
        callers=frozenset(c.name for c in cfg.callers), metrics=metrics, spool=spool,
        shipper=shipper, monitor=monitor,
        admission=admission,
        limits=Limits.of(cfg, set(features.set_names)),
        min_in_flight_to_shed=cfg.overload_min_in_flight)


def asgi_app() -> Starlette:
    """The uvicorn factory: ``uvicorn --factory mercury.serving.runtime:asgi_app``."""
    from mercury.config import load_settings
    from mercury.serving.app import create_app

    return create_app(lambda: build_runtime(load_settings()))

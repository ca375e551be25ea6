"""One context request: plan, fetch in parallel within the budget, answer, audit.

``ContextService.answer`` is the whole call without HTTP: the ASGI app authenticates, then
hands it a ``ContextRequest``. Time is the only thing it reads from the clock, once, as the
request's as-of time (the caller may pin ``as_of`` for replays and consistency checks).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from mercury.privacy.protect import user_token
from mercury.retrieval.index import SearchFilter
from mercury.serving.audit_sealing import AUDIT_STREAM as AUDIT_STREAM
from mercury.serving.breaker import CircuitBreaker
from mercury.serving.documents import DocumentFetcher, Documents
from mercury.serving.features import ONLINE, PRIOR, UNAVAILABLE, FeatureFetcher, SetContext
from mercury.serving.intent import DOCUMENTS, Plan, plan_for, plan_from_parts
from mercury.serving.money import present
from mercury.serving.request import BadRequest, ContextBody

if TYPE_CHECKING:
    from mercury.config import ServingConfig
    from mercury.privacy.keys import Keys
    from mercury.serving.audit import AuditSpool
    from mercury.serving.audit_sealing import AuditSealer
    from mercury.serving.metrics import Metrics

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContextRequest:
    """One validated request (``mercury.serving.request``), with who asks for it."""

    user_id: str
    question: str
    caller: str
    assertion_id: str
    request_id: str  # minted here (``request_ids.mint``): the audit key, bound to the caller
    caller_request_id: str | None = None  # the caller's own X-Request-Id, kept beside it
    parts: tuple[str, ...] | None = None
    language: str | None = None
    top_k: int | None = None
    budget_ms: int | None = None
    as_of_ms: int | None = None
    llm_model_version: str | None = None

    @classmethod
    def of(cls, body: ContextBody, caller: str, assertion_id: str, request_id: str,
           caller_request_id: str | None) -> ContextRequest:
        o = body.options
        return cls(user_id=body.user_id, question=body.question, caller=caller,
                   assertion_id=assertion_id, request_id=request_id,
                   caller_request_id=caller_request_id, parts=o.parts, language=o.language,
                   top_k=o.top_k, budget_ms=o.budget_ms, as_of_ms=o.as_of_ms,
                   llm_model_version=o.llm_model_version)


class Readiness(Protocol):
    """What the warm-up reports to (``mercury.serving.app.Runtime``)."""

    ready: bool
    warm_up_error: str | None


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class ContextService:
    def __init__(self, serving: ServingConfig, keys: Keys, features: FeatureFetcher,
                 documents: DocumentFetcher, spool: AuditSpool, metrics: Metrics,
                 sealer: AuditSealer) -> None:
        self.cfg = serving
        self.keys = keys
        self.sealer = sealer
        self.features = features
        self.documents = documents
        self.spool = spool
        self.metrics = metrics
        self.served_from = f"{socket.gethostname()}:{id(self):x}"

    def breakers(self) -> tuple[CircuitBreaker, CircuitBreaker]:
        return (self.features.breaker, self.documents.breaker)

    def start_warm_up(self, runtime: Readiness) -> None:
        """In the background: open the online store's connections and read its pointers,
        then load the embedding model and search once under every filter (documents.py). The
        process is ready when that is done, or has failed (the part then degrades): the first
        question must not pay for connections, imports or cold caches inside its budget."""
        documents = self.documents.warm_up()

        async def warm() -> None:
            try:  # a store that is down does not hold readiness back (module doc of app.py)
                await asyncio.wait_for(self.features.warm_up(), 5.0)
            except Exception as exc:  # noqa: BLE001
                log.warning("online store warm-up failed (features will degrade): %s", exc)
            if self.features.priors is not None:
                try:  # the first copy of the fallback priors (then priors.watch refreshes)
                    await asyncio.wait_for(asyncio.to_thread(self.features.priors.refresh), 5.0)
                except Exception as exc:  # noqa: BLE001
                    log.warning("fallback priors not read (none until a refresh): %s", exc)
            await asyncio.wrap_future(documents)

        def done(task: asyncio.Task[None]) -> None:
            error = task.exception()
            runtime.warm_up_error = None if error is None else f"{type(error).__name__}: {error}"
            runtime.ready = True

        asyncio.get_running_loop().create_task(warm()).add_done_callback(done)

    async def aclose(self) -> None:
        self.documents.close()
        await self.features.reader.store.aclose()

    def plan(self, request: ContextRequest) -> Plan:
        if request.parts is None:
            return plan_for(request.question)
        try:  # parts were checked against the known ones already: this is a second guard
            return plan_from_parts(list(request.parts), set(self.features.set_names))
        except ValueError as exc:
            raise BadRequest(f"options.parts: {exc}") from None

    async def answer(self, request: ContextRequest, started: float) -> dict[str, Any]:
        plan = self.plan(request)
        now_ms = int(time.time() * 1000)
        as_of_ms = request.as_of_ms or now_ms
        budget_s = (request.budget_ms or self.cfg.budget_ms) / 1000  # validated: [floor, 250]
        remaining = budget_s - (time.perf_counter() - started)
        k = request.top_k or self.cfg.top_k
        timings: dict[str, float] = {}

        async def timed(stage: str, coro: Awaitable[T]) -> T:
            t0 = time.perf_counter()
            try:
                return await coro
            finally:
                timings[stage] = (time.perf_counter() - t0) * 1000

        # Each source gets its own deadline, cut to what is left of the budget; both run at
        # once. A source whose own deadline was cut by the budget and missed it says nothing
        # about its store (see FeatureFetcher, DocumentFetcher).
        feature_task = timed("features", self.features.fetch(
            request.user_id, list(plan.feature_sets), as_of_ms,
            max(0.001, min(self.cfg.features_deadline_ms / 1000, remaining)),
            pinned=request.as_of_ms is not None))
        docs: Documents | None = None
        doc_problem: str | None = None
        if plan.documents:
            filters = SearchFilter(language=request.language, doc_type=plan.doc_type)
            doc_task = timed("documents", self.documents.fetch(
                request.question, k, filters,
                max(0.001, min(self.cfg.retrieval_deadline_ms / 1000, remaining))))
            sets, (docs, doc_problem) = await asyncio.gather(feature_task, doc_task)
        else:
            sets = await feature_task

        degraded: list[str] = []
        for name, ctx in sets.items():
            if ctx.source != ONLINE:
                reason = ctx.reason or "unknown"
                degraded.append(f"features.{name}:{ctx.source}:{reason}")
                self.metrics.degraded.labels(f"features.{name}", ctx.source, reason).inc()
        if plan.documents and docs is None:
            degraded.append(f"{DOCUMENTS}:{UNAVAILABLE}:{doc_problem}")
            self.metrics.degraded.labels(DOCUMENTS, UNAVAILABLE, str(doc_problem)).inc()
        if docs is not None and docs.cached:
            self.metrics.cache_hits.labels("retrieval_result").inc()

        token = user_token(self.keys, request.user_id)
        response: dict[str, Any] = {
            "request_id": request.request_id,
            "user_token": token,
            "as_of": _iso(as_of_ms),
            "intent": plan.intent,
            "fetched": list(plan.parts),
            "features": {name: self._shown(c) for name, c in sets.items()},
            "documents": None if docs is None else {
                "index_version": docs.index_version, "embedding_model": docs.embedding_model,
                "chunks": docs.chunks},
            "degraded": degraded,
            "versions": {"feature_sets": {n: c.version for n, c in sets.items()},
                         "index": docs.index_version if docs else None,
                         "embedding_model": docs.embedding_model if docs else None},
        }
        total_ms = (time.perf_counter() - started) * 1000
        timings["total"] = total_ms
        response["latency_ms"] = {s: round(v, 2) for s, v in timings.items()}
        for stage, value in timings.items():
            self.metrics.stage_ms.labels(stage).observe(value)
        self.metrics.requests.labels(plan.intent, "degraded" if degraded else "ok").inc()
        # Spooled before the response leaves: a response without an audit record is impossible
        # (a spool that cannot take it raises, and the request is refused, not answered).
        self.spool.append(AUDIT_STREAM, request.request_id,
                          self._audit(request, plan, token, now_ms, as_of_ms, sets, docs,
                                      degraded, timings))
        return response

    def _shown(self, ctx: SetContext) -> dict[str, Any]:
        """One set as answered: flagged real (``online``) or not, with its money rounded by
        the one edge rule (``money.present``); a prior says whose average it is."""
        feature_set = self.features.reader.catalog.get((ctx.name, ctx.version))
        shown: dict[str, Any] = {
            "version": ctx.version, "source": ctx.source, "as_of": _iso(ctx.as_of_ms),
            "newest_event": _iso(ctx.newest_event_ms),
            "degraded": ctx.source != ONLINE, "reason": ctx.reason,
            "values": ctx.values if feature_set is None else present(feature_set, ctx.values)}
        if ctx.source == PRIOR:
            shown["prior"] = {"segment": ctx.segment, "users": ctx.segment_users}
        return shown

    def _audit(self, request: ContextRequest, plan: Plan, token: str, now_ms: int,
               as_of_ms: int, sets: dict[str, SetContext], docs: Documents | None,
               degraded: list[str], timings: dict[str, float]) -> dict[str, Any]:
        chunks = docs.chunks if docs else []
        return {
            "request_id": request.request_id, "event_ts": now_ms, "caller": request.caller,
            "user_token": token,
            # Under this process's spool key (memory only); the shipper seals it again under
            # the user's key (audit_sealing.py).
            "question": self.sealer.seal_for_spool(request.request_id, request.user_id,
                                                   request.question),
            "intent": plan.intent, "retrieved_chunk_ids": [c["chunk_id"] for c in chunks],
            "feature_set": None, "feature_set_version": None, "features_as_of": as_of_ms,
            "index_version": docs.index_version if docs else None,
            "embedding_model": docs.embedding_model if docs else None,
            "llm_model_version": request.llm_model_version,
            "stage_latency_ms": {k: round(v, 3) for k, v in timings.items() if k != "total"},
            "total_latency_ms": round(timings["total"], 3), "degraded_parts": degraded,
            # Redacted by the shipper from the ciphertext, off the request path (audit.py).
            "question_redacted": None, "fetched_parts": list(plan.parts),
            "feature_versions": {n: c.version for n, c in sets.items()
                                 if c.version is not None},
            "feature_newest_event_ms": {n: c.newest_event_ms for n, c in sets.items()},
            "served_features_json": orjson.dumps(
                {n: c.values for n, c in sets.items()}).decode(),
            "retrieved_chunk_scores": [c["score"] for c in chunks],
            "assertion_id": request.assertion_id, "served_from": self.served_from,
            "caller_request_id": request.caller_request_id,
        }


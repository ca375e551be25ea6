"""The context API as an ASGI app (served by uvicorn: ``mercury serve``).

Routes:
- ``POST /v1/context``: the one call before the model (``ContextService.answer``);
- ``POST /v1/outcomes``: the serving tier reports the safety outcome of an answer;
- ``GET /healthz`` (the process answers), ``GET /readyz`` (warm-up done), ``GET /metrics``.

Status codes: 400 a malformed request (the message names the field), 401 no or bad service
token, 403 no valid assertion for the user (or an outcome for another caller's request), 429
over the caller's rate, 503 with ``Retry-After``: this process cannot answer within the budget
(all its slots taken, its event loop lagging, its audit spool unwritable), so the load balancer
retries elsewhere; on ``/readyz``, not warmed up yet. A store being slow or down is never an
error: the answer is 200 with the part marked degraded. Readiness deliberately ignores Redis
and the index: if they go down, every pod becoming unready would turn degraded answers into
errors at the load balancer.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mercury.serving import request_ids
from mercury.serving.admission import Overloaded
from mercury.serving.audit import SpoolFull
from mercury.serving.auth import AccessDenied, authenticate_caller
from mercury.serving.context import ContextRequest
from mercury.serving.erasures import ErasureWatch
from mercury.serving.identity import AssertionRefused
from mercury.serving.priors import watch as watch_priors
from mercury.serving.request import (
    MAX_BODY_BYTES,
    BadRequest,
    Limits,
    parse_body,
    validated,
    validated_outcome,
)

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.privacy.keys import Keys
    from mercury.serving.admission import Admission
    from mercury.serving.audit import AuditShipper, AuditSpool
    from mercury.serving.auth import RateLimiter
    from mercury.serving.context import ContextService
    from mercury.serving.identity import AssertionVerifier
    from mercury.serving.metrics import Metrics
    from mercury.serving.overload import LoopMonitor

log = logging.getLogger(__name__)
OUTCOMES_STREAM = "assistant_safety_outcomes"
_CALLER_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@dataclass
class Runtime:
    """Everything a request needs, built once per process by ``mercury.serving.runtime``."""

    settings: Settings
    keys: Keys
    service: ContextService
    verifier: AssertionVerifier
    limiter: RateLimiter
    callers: frozenset[str]
    metrics: Metrics
    spool: AuditSpool
    shipper: AuditShipper
    monitor: LoopMonitor
    admission: Admission
    limits: Limits
    min_in_flight_to_shed: int = 8
    ready: bool = False
    warm_up_error: str | None = None


def create_app(build_runtime: Callable[[], Runtime]) -> Starlette:
    """``build_runtime()`` returns a ``Runtime``; tests pass one with injected faults."""
    state: dict[str, Runtime] = {}

    def authenticated_caller(request: Request) -> str:
        rt: Runtime = state["rt"]
        caller = authenticate_caller(rt.keys, rt.callers, request.headers.get("authorization"))
        if not rt.limiter.allow(caller):
            raise AccessDenied(429, f"rate limit of {caller} exceeded")
        return caller

    async def context(request: Request) -> Response:
        started = time.perf_counter()
        rt: Runtime = state["rt"]
        # Shed before any work: a saturated process answers 503 at once, so the load balancer
        # retries elsewhere instead of this process missing every budget.
        if rt.monitor.overloaded and rt.admission.in_flight >= rt.min_in_flight_to_shed:
            return _shed(rt, Overloaded(f"event loop lags {rt.monitor.lag_ms:.0f} ms"))
        try:
            await rt.admission.enter()  # before any parsing: a shed request costs nothing
        except Overloaded as exc:
            return _shed(rt, exc)
        try:
            # The caller first (401/429 cost no body parse), then the body, then the user's
            # assertion: it is checked against the user id the body names.
            caller = authenticated_caller(request)
            caller_rid = request.headers.get("x-request-id")
            if caller_rid is not None and not _CALLER_REQUEST_ID.match(caller_rid):
                raise BadRequest("header X-Request-Id: 8-64 characters of [A-Za-z0-9_.:-]")
            body = validated(parse_body(await _body(request)), rt.limits)
            assertion = rt.verifier.verify(request.headers.get("x-user-assertion"), caller,
                                           body.user_id)
            ctx_request = ContextRequest.of(body, caller, assertion.assertion_id,
                                            request_ids.mint(rt.keys.service_tokens, caller),
                                            caller_rid)
            answer = await rt.service.answer(ctx_request, started)
        except AccessDenied as exc:
            rt.metrics.refused.labels(str(exc.status)).inc()
            return _json({"error": exc.reason}, exc.status)
        except AssertionRefused as exc:
            rt.metrics.refused.labels("403").inc()
            return _json({"error": f"end-user assertion refused: {exc}"}, 403)
        except BadRequest as exc:
            rt.metrics.refused.labels("400").inc()
            return _json({"error": str(exc)}, 400)
        except (Overloaded, SpoolFull) as exc:
            return _shed(rt, exc if isinstance(exc, Overloaded) else Overloaded(str(exc)))
        finally:
            rt.admission.leave()
        return _json(answer)

    async def outcomes(request: Request) -> Response:
        rt: Runtime = state["rt"]
        try:
            caller = authenticated_caller(request)
            body = validated_outcome(parse_body(await _body(request)))
            if not request_ids.minted_for(rt.keys.service_tokens, caller, body.request_id):
                raise AccessDenied(403, "request_id: not a request this caller made")
        except AccessDenied as exc:
            return _json({"error": exc.reason}, exc.status)
        except BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        record = {"request_id": body.request_id, "event_ts": int(time.time() * 1000),
                  "caller": caller, "outcome": body.outcome, "categories": list(body.categories),
                  "llm_model_version": body.llm_model_version,
                  "safety_model_version": body.safety_model_version,
                  "answer_sha256": body.answer_sha256,
                  "answer_latency_ms": body.answer_latency_ms}
        try:
            rt.spool.append(OUTCOMES_STREAM, body.request_id, record)
        except SpoolFull as exc:
            return _shed(rt, Overloaded(str(exc)))
        rt.metrics.outcomes.labels(body.outcome).inc()
        return _json({"request_id": body.request_id, "accepted": True}, 202)

    async def healthz(request: Request) -> Response:
        return _json({"status": "alive"})

    async def readyz(request: Request) -> Response:
        rt: Runtime = state["rt"]
        body = {"ready": rt.ready, "warm_up_error": rt.warm_up_error,
                "loop_lag_ms": round(rt.monitor.lag_ms, 2),
                "breakers": {b.name: b.state for b in rt.service.breakers()}}
        return _json(body, 200 if rt.ready else 503)

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        rt: Runtime = state["rt"]
        for breaker in rt.service.breakers():
            rt.metrics.breaker_open.labels(breaker.name).set(breaker.state != "closed")
        rt.metrics.audit_backlog.set(rt.shipper.backlog_bytes())
        rt.metrics.audit_shipped.set(rt.shipper.shipped)
        rt.metrics.audit_quarantined.set(rt.shipper.quarantined_total())
        rt.metrics.admission_in_flight.set(rt.admission.in_flight)
        rt.metrics.shed.set(rt.admission.shed)
        rt.metrics.loop_lag.set(rt.monitor.lag_ms)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # One runtime per process, built when uvicorn starts it (not at import): warm-up and the
    # audit shipper run in the background; readiness waits for the warm-up only.
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = state["rt"] = build_runtime()
        rt.monitor.start()
        rt.shipper.start()
        erasures = ErasureWatch(rt.service.features, rt.keys)
        erasures.start()
        priors = watch_priors(rt.service.features.priors, rt.settings.serving.priors_refresh_s) \
            if rt.service.features.priors is not None else None
        if priors is not None:
            priors.start()
        rt.service.start_warm_up(rt)
        try:
            yield
        finally:
            if priors is not None:
                await priors.stop()
            await erasures.stop()
            rt.monitor.stop()
            await rt.service.aclose()
            rt.shipper.stop()
            rt.spool.close()

    return Starlette(routes=[
        Route("/v1/context", context, methods=["POST"]),
        Route("/v1/outcomes", outcomes, methods=["POST"]),
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
    ], lifespan=lifespan)


async def _body(request: Request) -> bytes:
    """The body, refused (400) as soon as it grows past ``MAX_BODY_BYTES``: a declared or an
    actual size, before it is all read into memory."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BadRequest(f"body: larger than {MAX_BODY_BYTES} bytes (or a bad content-length)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"body: larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _shed(rt: Runtime, exc: Overloaded) -> Response:
    rt.metrics.refused.labels("503").inc()
    return Response(orjson.dumps({"error": f"overloaded: {exc.reason}; retry on another "
                                           "instance"}),
                    status_code=503, media_type="application/json",
                    headers={"Retry-After": str(max(1, round(exc.retry_after_s)))})

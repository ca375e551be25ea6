"""The context API as an ASGI app (served by uvicorn: ``mercury serve``).

Routes:
- ``POST /v1/context``: the one call before the model (``ContextService.answer``);
- ``POST /v1/outcomes``: the serving tier reports the safety outcome of an answer;
- ``GET /healthz`` (the process answers), ``GET /readyz`` (warm-up done), ``GET /metrics``.

Status codes: 400 a malformed request, 401 no or bad service token, 403 no valid assertion
for the user, 429 over the caller's rate, 503 this process is saturated (its event loop
lags: the load balancer should retry elsewhere) or, on ``/readyz``, not warmed up yet. A
store being slow or down is never an error: the answer is 200 with the part marked degraded.
Readiness deliberately
ignores Redis and the index: if they go down, every pod becoming unready would turn degraded
answers into errors at the load balancer.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mercury.serving.auth import AccessDenied, authenticate_caller
from mercury.serving.context import BadRequest, parse_request

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.privacy.keys import Keys
    from mercury.serving.audit import AuditShipper, AuditSpool
    from mercury.serving.auth import AssertionVerifier, RateLimiter
    from mercury.serving.context import ContextService
    from mercury.serving.metrics import Metrics
    from mercury.serving.overload import LoopMonitor

log = logging.getLogger(__name__)
OUTCOMES_STREAM = "assistant_safety_outcomes"
_OUTCOMES = ("ALLOWED", "MODIFIED", "BLOCKED")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")


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
    min_in_flight_to_shed: int = 8
    in_flight: int = 0
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
        if rt.monitor.overloaded and rt.in_flight >= rt.min_in_flight_to_shed:
            rt.metrics.refused.labels("503").inc()
            return _json({"error": "overloaded: retry on another instance",
                          "loop_lag_ms": round(rt.monitor.lag_ms, 1)}, 503)
        rt.in_flight += 1
        try:
            # The caller first (401/429 cost no body parse), then the body, then the user's
            # assertion: it is checked against the user id the body names.
            caller = authenticated_caller(request)
            rid = request.headers.get("x-request-id")
            if rid is not None and not _REQUEST_ID.match(rid):
                raise BadRequest("X-Request-Id must be 8-64 characters of [A-Za-z0-9_.:-]")
            body = orjson.loads(await request.body())
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            ctx_request = parse_request(body, caller, "", rid)
            assertion = rt.verifier.verify(request.headers.get("x-user-assertion"), caller,
                                           ctx_request.user_id)
            ctx_request = replace(ctx_request, assertion_id=assertion.assertion_id)
            answer = await rt.service.answer(ctx_request, started)
        except AccessDenied as exc:
            rt.metrics.refused.labels(str(exc.status)).inc()
            return _json({"error": exc.reason}, exc.status)
        except (BadRequest, orjson.JSONDecodeError) as exc:
            rt.metrics.refused.labels("400").inc()
            return _json({"error": str(exc)}, 400)
        finally:
            rt.in_flight -= 1
        return _json(answer)

    async def outcomes(request: Request) -> Response:
        rt: Runtime = state["rt"]
        try:
            caller = authenticated_caller(request)
            body = orjson.loads(await request.body())
            record = _outcome_record(body, caller)
        except AccessDenied as exc:
            return _json({"error": exc.reason}, exc.status)
        except (BadRequest, orjson.JSONDecodeError) as exc:
            return _json({"error": str(exc)}, 400)
        rt.spool.append(OUTCOMES_STREAM, record["request_id"], record)
        rt.metrics.outcomes.labels(record["outcome"]).inc()
        return _json({"request_id": record["request_id"], "accepted": True}, 202)

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
        rt.metrics.loop_lag.set(rt.monitor.lag_ms)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # One runtime per process, built when uvicorn starts it (not at import): warm-up and the
    # audit shipper run in the background; readiness waits for the warm-up only.
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = state["rt"] = build_runtime()
        rt.monitor.start()
        rt.shipper.start()
        rt.service.start_warm_up(rt)
        try:
            yield
        finally:
            rt.monitor.stop()
            await rt.service.aclose()
            rt.shipper.stop()
            rt.spool.close()

    return Starlette(routes=[
        Route("/v1/context", context, methods=["POST"]),
        Route("/v1/outcomes", outcomes, methods=["POST"]),
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
    ], lifespan=lifespan)


def _outcome_record(body: Any, caller: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    rid = body.get("request_id")
    if not isinstance(rid, str) or not _REQUEST_ID.match(rid):
        raise BadRequest("'request_id' is required: the request id of the context call")
    if body.get("outcome") not in _OUTCOMES:
        raise BadRequest(f"'outcome' must be one of {', '.join(_OUTCOMES)}")
    categories = body.get("categories") or []
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise BadRequest("'categories' must be a list of strings")
    answer_sha = body.get("answer_sha256")
    if answer_sha is not None and not re.fullmatch(r"[0-9a-f]{64}", str(answer_sha)):
        raise BadRequest("'answer_sha256' must be 64 lower-case hex digits")
    latency = body.get("answer_latency_ms")
    if latency is not None and not isinstance(latency, int | float):
        raise BadRequest("'answer_latency_ms' must be a number")
    return {"request_id": rid, "event_ts": int(time.time() * 1000), "caller": caller,
            "outcome": body["outcome"], "categories": categories,
            "llm_model_version": body.get("llm_model_version"),
            "safety_model_version": body.get("safety_model_version"),
            "answer_sha256": answer_sha,
            "answer_latency_ms": None if latency is None else float(latency)}

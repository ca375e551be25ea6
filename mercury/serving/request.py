"""The context API's input contract: a typed request, every limit in one place.

Anything a caller can send is checked here, before a store is touched: a violation is a
``BadRequest`` naming the field (HTTP 400), never a 500, and never a request that could open a
breaker for other users (a 1 ms budget, a language no index holds) or poison a cache (an
as-of time in the future).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from mercury.config import ServingConfig
from mercury.contracts.code_lists import LANGUAGES
from mercury.serving.intent import DOCUMENTS

MAX_BODY_BYTES = 16 * 1024
MAX_QUESTION_CHARS = 2_000
MAX_TOP_K = 20
MAX_BUDGET_MS = 250           # assistant end to end, short answers: P95 < 250 ms
MAX_ID_CHARS = 64


class BadRequest(ValueError):
    """The request itself is wrong (400); the message names the field."""


_ShortText = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    parts: tuple[Annotated[StrictStr, Field(max_length=64)], ...] | None = Field(
        None, max_length=16)
    language: StrictStr | None = None
    top_k: StrictInt | None = Field(None, ge=1, le=MAX_TOP_K)
    budget_ms: StrictInt | None = Field(None, le=MAX_BUDGET_MS)
    as_of_ms: StrictInt | None = Field(None, ge=0)
    llm_model_version: _ShortText | None = None

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is not None and value not in LANGUAGES:
            raise ValueError("not an ISO 639-1 language code")
        return value


class ContextBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: _ShortText
    question: Annotated[StrictStr, Field(min_length=1, max_length=MAX_QUESTION_CHARS)]
    options: Options = Options()

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or ``BadRequest`` (size, encoding, JSON, depth)."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"body: larger than {MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(raw)  # UTF-8 only, lone surrogates refused, nesting capped
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body: not valid JSON ({exc.msg})") from None
    if not isinstance(body, dict):
        raise BadRequest("body: must be a JSON object")
    return body


def _first_problem(exc: ValidationError) -> str:
    """The first violation, named by its field (``options.top_k: ...``)."""
    first: ErrorDetails = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


@dataclass(frozen=True)
class Limits:
    """The deployment's own limits (``serving`` config) beside the fixed ones above."""

    budget_floor_ms: int
    known_parts: frozenset[str]
    as_of_future_skew_ms: int
    as_of_max_age_ms: int

    @classmethod
    def of(cls, serving: ServingConfig, feature_sets: set[str]) -> Limits:
        return cls(serving.budget_floor_ms,
                   frozenset({DOCUMENTS, *(f"features.{name}" for name in feature_sets)}),
                   serving.as_of_future_skew_ms, serving.as_of_max_age_s * 1000)


def validated(body: dict[str, Any], limits: Limits, now_ms: int | None = None) -> ContextBody:
    """The request checked against every limit; ``BadRequest`` names the first field wrong."""
    try:
        request = ContextBody.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(_first_problem(exc)) from None
    options = request.options
    if options.budget_ms is not None and options.budget_ms < limits.budget_floor_ms:
        raise BadRequest(f"options.budget_ms: at least {limits.budget_floor_ms} (what one "
                         f"store round trip needs), at most {MAX_BUDGET_MS}")
    for part in options.parts or ():
        if part not in limits.known_parts:
            raise BadRequest(f"options.parts: unknown part {part!r}; known: "
                             f"{', '.join(sorted(limits.known_parts))}")
    if options.as_of_ms is not None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if options.as_of_ms > now_ms + limits.as_of_future_skew_ms:
            raise BadRequest("options.as_of_ms: in the future")
        if options.as_of_ms < now_ms - limits.as_of_max_age_ms:
            raise BadRequest("options.as_of_ms: older than the online store keeps values "
                             "(historical values come from the batch path)")
    return request


class OutcomeBody(BaseModel):
    """``POST /v1/outcomes``: the safety outcome of one answer, reported by its caller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}$")]
    outcome: Literal["ALLOWED", "MODIFIED", "BLOCKED"]
    categories: tuple[_ShortText, ...] = Field((), max_length=20)
    llm_model_version: _ShortText | None = None
    safety_model_version: _ShortText | None = None
    answer_sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    answer_latency_ms: Annotated[float, Field(ge=0, le=3_600_000)] | None = None


def validated_outcome(body: dict[str, Any]) -> OutcomeBody:
    try:
        return OutcomeBody.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(_first_problem(exc)) from None

"""The context API under hostile and careless input, in process (Starlette's TestClient over
the real ASGI app) on a private real Redis and a local index.

Every case must come back as a 4xx naming what is wrong (or, for a saturated process, a 503
with Retry-After): never a 500, never a breaker opened for everyone by one caller's input,
and audit shipping still flowing afterwards. Also: one user's corrupt data degrades only that
user's set, assertions are single-use and short-lived, an outcome is accepted only from the
caller that made the request, and a record that cannot travel is quarantined, not wedged.
"""

from __future__ import annotations

import time

import orjson
import pytest

from mercury.serving.auth import service_token
from mercury.serving.local_idp import issue_assertion
from tests.serving_fixtures import build_served_world
from tests.test_context_api import CALLER, Api, _audit_records, _client, _wait_ready

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    served = build_served_world(tmp_path_factory.mktemp("hostile"))
    yield served
    served.redis.stop()


@pytest.fixture(scope="module")
def api(world):
    with _client(world.settings) as client:
        _wait_ready(client)
        yield Api(client, world.settings)


def _headers(api: Api, user: str, **claims) -> dict:
    return {"authorization": f"Bearer {api.token}",
            "x-user-assertion": issue_assertion(api.settings, user, CALLER, **claims)}


def _post(api: Api, body, user: str, raw: bytes | None = None, headers: dict | None = None):
    headers = headers if headers is not None else _headers(api, user)
    if raw is not None:
        return api.client.post("/v1/context", content=raw,
                               headers={**headers, "content-type": "application/json"})
    return api.client.post("/v1/context", json=body, headers=headers)


def _breakers(api: Api) -> dict:
    return api.client.get("/readyz").json()["breakers"]


# --- bodies and options ---------------------------------------------------------------------

def _cases(user: str) -> list[tuple[str, dict | None, bytes | None, str]]:
    """(case, JSON body or None, raw bytes or None, the field the 400 must name)."""
    ok = {"user_id": user, "question": "can I afford a jacket?"}

    def opt(**options):
        return {**ok, "options": options}

    return [
        ("empty body", None, b"", "body"),
        ("not JSON", None, b"why declined", "body"),
        ("not UTF-8", None, b'{"user_id": "\xff\xfe", "question": "x"}', "body"),
        ("lone surrogate", None, b'{"user_id": "u", "question": "\\ud800"}', "body"),
        ("depth 10,000", None, b"[" * 8000 + b"]" * 8000, "body"),
        ("100 KiB", None, orjson.dumps({**ok, "question": "x" * 100_000}), "body"),
        ("a list", [ok], None, "body"),
        ("no user", {"question": "x"}, None, "user_id"),
        ("user not a string", {**ok, "user_id": 7}, None, "user_id"),
        ("blank question", {**ok, "question": "   "}, None, "question"),
        ("question too long", {**ok, "question": "q" * 2_001}, None, "question"),
        ("unknown field", {**ok, "debug": True}, None, "debug"),
        ("options not an object", {**ok, "options": [1]}, None, "options"),
        ("top_k 0", opt(top_k=0), None, "options.top_k"),
        ("top_k 21", opt(top_k=21), None, "options.top_k"),
        ("top_k a string", opt(top_k="5"), None, "options.top_k"),
        ("top_k true", opt(top_k=True), None, "options.top_k"),
        ("budget 1 ms", opt(budget_ms=1), None, "options.budget_ms"),
        ("budget 10 s", opt(budget_ms=10_000), None, "options.budget_ms"),
        ("language 5", opt(language=5), None, "options.language"),
        ("language xx", opt(language="xx"), None, "options.language"),
        ("parts not a list", opt(parts="documents"), None, "options.parts"),
        ("unknown part", opt(parts=["features.salary"]), None, "options.parts"),
        ("as_of tomorrow", opt(as_of_ms=int(time.time() * 1000) + 86_400_000), None,
         "options.as_of_ms"),
        ("as_of 1970", opt(as_of_ms=1), None, "options.as_of_ms"),
        ("as_of negative", opt(as_of_ms=-5), None, "options.as_of_ms"),
        ("model version an object", opt(llm_model_version={"a": 1}), None,
         "options.llm_model_version"),
        ("model version 5 MiB", opt(llm_model_version="m" * 200), None,
         "options.llm_model_version"),
    ]


def test_every_bad_body_is_a_400_naming_the_field_and_changes_nothing(api, world):
    user = world.users[2]
    breakers_before = _breakers(api)
    shipped_before = api.client.get("/metrics").text
    for case, body, raw, field in _cases(user):
        reply = _post(api, body, user, raw=raw)
        assert reply.status_code == 400, (case, reply.status_code, reply.text)
        assert reply.json()["error"].startswith(field), (case, reply.json())
    assert _breakers(api) == breakers_before == {"redis": "closed", "index": "closed"}
    # Five requests with a 1 ms budget or a language no index holds do not open a breaker.
    for _ in range(6):
        assert _post(api, {"user_id": user, "question": "why declined?",
                           "options": {"budget_ms": 10}}, user).status_code == 200
    assert _breakers(api) == breakers_before
    # And the service still answers, and ships its audit.
    good = _post(api, {"user_id": user, "question": "why was my card declined?"}, user)
    assert good.status_code == 200 and good.json()["degraded"] == []
    assert "context_audit_shipped_total" in shipped_before


def test_headers_that_are_wrong_are_4xx_not_500(api, world):
    user = world.users[3]
    body = {"user_id": user, "question": "can I afford it?"}
    cases = {
        "no token": {},
        "not bearer": {"authorization": "Basic abc"},
        "non-ASCII token": {"authorization": "Bearer llm-gateway.\u00e9\u00e8".encode()},
        "another caller's token": {"authorization": f"Bearer nobody.{'0' * 64}"},
    }
    for case, headers in cases.items():
        reply = api.client.post("/v1/context", json=body, headers=headers)
        assert reply.status_code == 401, (case, reply.text)
    token = {"authorization": f"Bearer {api.token}"}
    bad_rid = {**_headers(api, user), "x-request-id": "no spaces allowed here"}
    assert _post(api, body, user, headers=bad_rid).status_code == 400
    assert _post(api, body, user, headers={**token, "x-user-assertion": "\u00e9".encode()}
                 ).status_code == 403


# --- assertions -----------------------------------------------------------------------------

def test_assertions_are_single_use_short_lived_and_from_the_provider(api, world):
    user = world.users[4]
    body = {"user_id": user, "question": "can I afford it?"}
    headers = _headers(api, user)
    assert _post(api, body, user, headers=headers).status_code == 200
    replayed = _post(api, body, user, headers=headers)
    assert replayed.status_code == 403 and "replay" in replayed.json()["error"]
    now = time.time()
    forged = {
        "dated ten years ahead": dict(now=now + 10 * 365 * 86_400),
        "living ten years": dict(ttl_s=10 * 365 * 86_400),
        "not valid yet": dict(nbf=int(now) + 3_600),
        "expired": dict(now=now - 3_600, ttl_s=60),
        "another issuer": dict(iss="https://evil.example"),
        "an unknown key": dict(kid="local-deadbeef"),
        "a bool for iat": dict(iat=True),
    }
    for case, claims in forged.items():
        reply = _post(api, body, user, headers=_headers(api, user, **claims))
        assert reply.status_code == 403, (case, reply.text)
    assert _post(api, body, user).status_code == 200  # a fresh one still works


# --- request ids and outcomes ---------------------------------------------------------------

def test_the_server_mints_request_ids_and_outcomes_come_only_from_their_caller(api, world):
    from mercury.config import CallerConfig

    user = world.users[5]
    mine = _post(api, {"user_id": user, "question": "can I afford it?"}, user,
                 headers={**_headers(api, user), "x-request-id": "gateway-trace-0001"}).json()
    assert mine["request_id"] != "gateway-trace-0001" and len(mine["request_id"]) == 32
    outcome = {"request_id": mine["request_id"], "outcome": "ALLOWED"}
    token = {"authorization": f"Bearer {api.token}"}
    assert api.client.post("/v1/outcomes", json=outcome, headers=token).status_code == 202
    settings = world.settings.model_copy(update={"serving": world.settings.serving.model_copy(
        update={"callers": (CallerConfig(name=CALLER), CallerConfig(name="batch-scorer"))})})
    with _client(settings) as client:
        _wait_ready(client)
        other = {"authorization": f"Bearer {service_token(api.keys, 'batch-scorer')}"}
        refused = client.post("/v1/outcomes", json=outcome, headers=other)
        assert refused.status_code == 403 and "request_id" in refused.json()["error"]
        made_up = client.post("/v1/outcomes", headers=token,
                              json={**outcome, "request_id": "0" * 32})
        assert made_up.status_code == 403
        for bad in ({**outcome, "outcome": "MAYBE"}, {**outcome, "categories": "x"},
                    {**outcome, "answer_latency_ms": "fast"}, [outcome]):
            reply = client.post("/v1/outcomes", json=bad, headers=token)
            assert reply.status_code == 400, (bad, reply.text)


# --- one user's data ------------------------------------------------------------------------

def test_a_corrupt_hash_degrades_that_users_set_only_and_opens_no_breaker(api, world):
    import redis

    from mercury.features.definition.compile import load_one
    from mercury.online import layout

    def spends(user: str) -> bool:
        answer = _post(api, {"user_id": user, "question": "can I afford a jacket?"}, user)
        return bool(answer.json()["features"]["spending"]["values"]["settled_amount"]["30d"])

    victim, bystander = [u for u in world.users[6:] if spends(u)][:2]
    spending = load_one("spending.v1")
    client = redis.Redis(port=world.redis.port)
    key = layout.entity_key(spending, victim)
    saved = client.dump(key)
    for tile in [f for f in client.hkeys(key) if f.startswith(b"t:")]:
        client.hset(key, tile, b"\x00not json")  # bytes that are not ours
    try:
        for _ in range(8):
            hit = _post(api, {"user_id": victim, "question": "can I afford a jacket?"},
                        victim).json()
            assert hit["features"]["spending"] == {**hit["features"]["spending"],
                                                   "source": "missing", "values": None}
            assert "features.spending:missing:corrupt" in hit["degraded"]
            assert hit["features"]["purchases"]["source"] == "online"
        fine = _post(api, {"user_id": bystander, "question": "can I afford a jacket?"},
                     bystander).json()
        assert fine["degraded"] == []
        assert _breakers(api)["redis"] == "closed"
    finally:
        client.restore(key, 0, saved, replace=True)


def test_a_user_the_store_knows_nothing_of_gets_missing_sets_not_zeros(api):
    stranger = "usr_neverseen0000"
    body = _post(api, {"user_id": stranger, "question": "can I afford a jacket?"},
                 stranger).json()
    for name, part in body["features"].items():
        assert part["source"] == "missing" and part["values"] is None, name
    assert sorted(body["degraded"]) == sorted(f"features.{n}:missing:no_data"
                                              for n in body["features"])


# --- audit that cannot wedge ----------------------------------------------------------------

def test_a_record_that_cannot_travel_is_quarantined_and_shipping_goes_on(world, tmp_path):
    from mercury.serving.audit import quarantine_path
    from mercury.serving.runtime import spool_dir
    from tests.test_context_api import _own_event_log

    settings = _own_event_log(world.settings, tmp_path)
    with _client(settings) as client:
        _wait_ready(client)
        api = Api(client, settings)
        first = _post(api, {"user_id": world.users[8], "question": "can I afford it?"},
                      world.users[8]).json()["request_id"]
        rt_spool = next(spool_dir(settings).glob("*.jsonl"))
        with open(rt_spool, "ab") as raw:  # what a short write on a full disk leaves
            raw.write(b'{"stream": "inference_audit", "key": "torn", "rec\n')
            raw.write(orjson.dumps({"stream": "inference_audit", "key": "huge",
                                    "record": {"request_id": "huge", "pad": "x" * 1_000_000}})
                      + b"\n")
            raw.write(orjson.dumps({"stream": "inference_audit", "key": "wrong",
                                    "record": {"request_id": 5}}) + b"\n")
        second = _post(api, {"user_id": world.users[9], "question": "can I afford it?"},
                       world.users[9]).json()["request_id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shipped = {r["request_id"] for r in _audit_records(settings)}
            if {first, second} <= shipped:
                break
            time.sleep(0.2)
        metrics = client.get("/metrics").text
    assert {first, second} <= shipped  # the line after the bad ones still travelled
    owner = rt_spool.name.split(".", 1)[0]
    kept = [orjson.loads(line) for line in
            quarantine_path(spool_dir(settings), owner).read_bytes().splitlines()]
    reasons = sorted(k["reason"].split(":")[0] for k in kept)
    assert reasons == ["does not encode", "oversized", "undecodable spool line"], reasons
    assert "context_audit_quarantined_total 3.0" in metrics


# --- redaction ------------------------------------------------------------------------------

def test_redaction_masks_security_codes_and_expiry_dates_in_linear_time():
    from mercury.privacy.redaction import redact

    assert redact("my cvv is 123 and the card expires 12/27") == \
        "my [security code] and the card [expiry]"
    assert redact("CVC: 4567, exp. 03/2029, valid thru 1/28") == \
        "[security code], [expiry], [expiry]"
    assert redact("mon cryptogramme est 321; código de seguridad 987") == \
        "mon [security code]; [security code]"
    assert redact("I paid 25.50 at 10:30") == "I paid 25.50 at 10:30"
    for hostile in ("_" * 4_000, "a" * 4_000, "1" * 4_000, "a." * 2_000, "cvv " * 1_000,
                    "exp " * 1_000, ("a" * 60 + "@") * 60, "FR" * 2_000):
        redact(hostile)  # warm
        started = time.perf_counter()
        redact(hostile)
        assert time.perf_counter() - started < 0.025, hostile[:8]  # ~1 ms here; a bound


# --- the breaker follows the store, and only the store ----------------------------------------

def test_the_redis_breaker_opens_within_a_second_of_redis_stopping_and_closes_after(
        world, tmp_path):
    """Requests every ~20 ms; Redis stopped, then started again (a copy of the world's)."""
    from tests.serving_fixtures import PrivateRedis
    from tests.test_context_api import _copy_redis

    spare = PrivateRedis(tmp_path)
    spare.start()
    _copy_redis(world.redis.port, spare.port)
    redis_cfg = world.settings.online_store.model_copy(update={"port": spare.port})
    settings = world.settings.model_copy(update={"online_store": redis_cfg})
    user = world.users[10]
    timeline: list[tuple[float, int, str]] = []  # (when, status, breaker state)

    def poke(api: Api, client) -> None:
        reply = _post(api, {"user_id": user, "question": "can I afford it?"}, user)
        timeline.append((time.monotonic(), reply.status_code,
                         client.get("/readyz").json()["breakers"]["redis"]))
        time.sleep(0.02)

    try:
        with _client(settings) as client:
            _wait_ready(client)
            api = Api(client, settings)
            for _ in range(10):
                poke(api, client)
            assert {state for *_, state in timeline} == {"closed"}
            spare.stop()
            stopped = time.monotonic()
            while time.monotonic() - stopped < 2.0:
                poke(api, client)
            spare.start()
            _copy_redis(world.redis.port, spare.port)
            started = time.monotonic()
            while time.monotonic() - started < 6.0:
                poke(api, client)
    finally:
        spare.stop()
    assert all(status == 200 for _, status, _ in timeline)  # degraded answers, never errors
    opened = next(t for t, _, state in timeline if t > stopped and state != "closed")
    assert opened - stopped < 1.0, opened - stopped
    closed = next(t for t, _, state in timeline if t > started and state == "closed")
    assert closed - started < 5.0, closed - started
    assert timeline[-1][2] == "closed"

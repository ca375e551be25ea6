"""The context API's parts on their own: intent table, breaker, rate limit, audit spool and
shipper, and the privacy helpers."""

from __future__ import annotations

import os
import stat

import orjson
import pytest

from mercury.privacy.keys import load_keys
from mercury.privacy.protect import redact, user_token
from mercury.serving.admission import Overloaded
from mercury.serving.audit import AuditShipper, AuditSpool, ship_file
from mercury.serving.auth import RateLimiter
from mercury.serving.breaker import CircuitBreaker
from mercury.serving.intent import BROAD, plan_for, plan_from_parts


@pytest.mark.parametrize("question, intent", [
    ("Why was my card declined?", "why_declined"),
    ("my payment didn't go through at the till", "why_declined"),
    ("Pourquoi ma carte a-t-elle été refusée ?", "why_declined"),
    ("¿Por qué rechazaron mi tarjeta?", "why_declined"),
    ("Warum wurde meine Zahlung abgelehnt?", "why_declined"),
    ("Can I afford a new phone?", "can_afford"),
    ("Est-ce que je peux me permettre ce voyage ?", "can_afford"),
    ("Kann ich mir das leisten?", "can_afford"),
    ("Summarize my spending this week", "spending_summary"),
    ("Combien j'ai dépensé ce mois-ci ?", "spending_summary"),
    ("Wie hoch waren meine Ausgaben?", "spending_summary"),
    ("Is my card frozen?", "card_status"),
    ("How do I get a refund from this shop?", "merchant_help"),
    ("What's the weather like?", "general"),
])
def test_intent_table(question, intent):
    assert plan_for(question).intent == intent


def test_plans_fetch_only_what_the_intent_needs():
    afford = plan_for("can I afford it?")
    assert afford.parts == ("features.spending", "features.purchases", "features.profile")
    declined = plan_for("why declined?")
    assert declined.documents and declined.doc_type == "CARD_POLICY"
    assert "features.declines" in declined.parts and "features.spending" not in declined.parts
    assert BROAD.documents and len(BROAD.feature_sets) == 6
    assert plan_from_parts(["documents", "features.risk", "features.risk"], {"risk"}).parts == (
        "features.risk", "documents")
    with pytest.raises(ValueError, match="unknown part 'features.x'"):
        plan_from_parts(["features.x"], {"risk"})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_breaker_opens_on_a_failure_rate_over_enough_calls_in_its_window():
    clock = Clock()
    breaker = CircuitBreaker("redis", min_calls=4, failure_rate=0.5, window_s=10, clock=clock)
    for failed in (True, False, True):  # 2 of 3: a rate, but too few calls to judge
        breaker.failure() if failed else breaker.success()
    assert breaker.state == "closed"
    breaker.success()
    assert breaker.state == "closed"  # 2 of 4 failed: at the rate ...
    breaker.failure()
    assert breaker.state == "open"  # ... 3 of 5 over it
    breaker = CircuitBreaker("redis", min_calls=4, failure_rate=0.5, window_s=10, clock=clock)
    for _ in range(3):
        breaker.failure()
    clock.now += 11  # those failures left the window
    breaker.failure()
    assert breaker.state == "closed"
    for _ in range(20):
        breaker.release()  # overload, caller deadlines, one user's data: not judged
    assert breaker.state == "closed"


def test_breaker_opens_after_failures_then_lets_one_trial_through():
    clock = Clock()
    breaker = CircuitBreaker("redis", min_calls=3, reset_s=5, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 5.0
    assert breaker.allow() and not breaker.allow()  # exactly one trial while half-open
    breaker.failure()  # the trial failed: open again for reset_s
    assert breaker.state == "open"
    clock.now = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_rate_limiter_refills_at_the_configured_rate():
    clock = Clock()
    limiter = RateLimiter({"gw": (10.0, 2)}, clock=clock)
    assert [limiter.allow("gw") for _ in range(3)] == [True, True, False]
    clock.now = 0.1  # one token back
    assert [limiter.allow("gw") for _ in range(2)] == [True, False]


class Producer:
    def __init__(self, fail_flush: bool = False):
        self.sent, self.durable, self.fail_flush = [], [], fail_flush

    def send(self, stream, value, key=None):
        self.sent.append((stream, key, value))

    def flush(self):
        if self.fail_flush:
            raise ConnectionError("event log down")
        self.durable.extend(self.sent)
        self.sent = []


def _shipper(spool, producer):
    return AuditShipper(spool, producer, lambda stream, record: orjson.dumps(record))


def test_a_torn_last_line_waits_until_it_is_whole(tmp_path):
    spool = AuditSpool(tmp_path, owner="a")
    spool.append("inference_audit", "r1", {"request_id": "r1"})
    with open(spool.path, "ab") as raw:
        raw.write(b'{"stream": "inference_audit", "key": "r2", "rec')  # a write cut short
    producer = Producer()
    assert ship_file(spool.path, lambda s, k, r: producer.send(s, r, k), producer.flush) == 1
    with open(spool.path, "ab") as raw:
        raw.write(b'ord": {"request_id": "r2"}}\n')
    assert ship_file(spool.path, lambda s, k, r: producer.send(s, r, k), producer.flush) == 1
    assert [key for _, key, _ in producer.durable] == ["r1", "r2"]


def test_progress_is_recorded_only_after_the_flush(tmp_path):
    spool = AuditSpool(tmp_path, owner="a")
    spool.append("inference_audit", "r1", {"request_id": "r1"})
    with pytest.raises(ConnectionError):
        _shipper(spool, Producer(fail_flush=True)).ship_once()
    healthy = Producer()
    _shipper(spool, healthy).ship_once()  # everything again: nothing was marked shipped
    assert [key for _, key, _ in healthy.durable] == ["r1"]


def test_segments_rotate_and_are_removed_once_shipped(tmp_path):
    spool = AuditSpool(tmp_path, owner="a", segment_bytes=200)
    for i in range(10):
        spool.append("inference_audit", f"r{i}", {"request_id": f"r{i}", "pad": "x" * 50})
    assert len(spool.segments()) > 3
    producer = Producer()
    _shipper(spool, producer).ship_once()
    assert [key for _, key, _ in producer.durable] == [f"r{i}" for i in range(10)]
    assert spool.segments() == [spool.path]  # only the one still written to is kept


def _slow_round(tmp_path):
    """A shipper whose first round is in flight (its redaction takes 0.3 s per record, as a
    first redaction can on a busy machine) over r1 and r2; r3 is spooled after it began."""
    import threading
    import time

    spool, producer, in_round = AuditSpool(tmp_path, owner="a"), Producer(), threading.Event()

    def slow_prepare(stream, record):
        in_round.set()
        time.sleep(0.3)
        return record

    shipper = AuditShipper(spool, producer, lambda stream, record: orjson.dumps(record),
                           interval_s=0.01, prepare=slow_prepare)
    spool.append("inference_audit", "r1", {"request_id": "r1"})
    spool.append("inference_audit", "r2", {"request_id": "r2"})
    shipper.start()
    assert in_round.wait(5)
    spool.append("inference_audit", "r3", {"request_id": "r3"})
    return spool, producer, shipper


def test_stop_waits_for_the_round_in_flight_then_ships_the_rest(tmp_path):
    spool, producer, shipper = _slow_round(tmp_path)
    shipper.stop()
    assert [key for _, key, _ in producer.durable] == ["r1", "r2", "r3"]


def test_a_stop_that_cannot_wait_ships_nothing_twice(tmp_path):
    spool, producer, shipper = _slow_round(tmp_path)
    shipper.stop(timeout_s=0.05)  # gives up while the round is in flight: no second round
    shipper._thread.join(5)
    assert [key for _, key, _ in producer.durable] == ["r1", "r2", "r3"]
    assert shipper.backlog_bytes() == 0


def test_a_dead_owners_spool_is_shipped_by_the_next_process_and_a_live_one_is_not(tmp_path):
    dead = AuditSpool(tmp_path, owner="dead")
    dead.append("inference_audit", "d1", {"request_id": "d1"})
    dead.close()  # its lock is released, as when the process dies
    alive = AuditSpool(tmp_path, owner="alive")
    alive.append("inference_audit", "a1", {"request_id": "a1"})
    mine = AuditSpool(tmp_path, owner="mine")
    producer = Producer()
    _shipper(mine, producer).ship_once()
    assert sorted(key for _, key, _ in producer.durable) == ["d1"]
    assert not list(tmp_path.glob("dead.*")), "the dead owner's files are removed"
    assert alive.segments(), "a live owner's spool is left to its owner"


def test_privacy_helpers(tmp_settings):
    keys = load_keys(tmp_settings)
    assert stat.S_IMODE(os.stat(tmp_settings.key_file).st_mode) == 0o600
    assert user_token(keys, "u-1") == user_token(keys, "u-1") != user_token(keys, "u-2")
    assert user_token(keys, "u-1").startswith("ut_") and "u-1" not in user_token(keys, "u-1")
    # Sealing and opening questions: tests/test_privacy_keys.py
    assert redact("card 4111 1111 1111 1111, ends 1234, jo@x.com, FR76 3000 6000 0112 3456 "
                  "7890 189, paid 25.50") == "card [number], ends [number], [email], [iban], " \
                                             "paid 25.50"


def _reader(async_client):
    """The context API's read path over a stand-in asyncio Redis client."""
    from mercury.config import RedisStoreConfig
    from mercury.features.definition.compile import load_compiled
    from mercury.features.reader import ContextReader
    from mercury.online.redis_store import RedisOnlineStore

    return ContextReader(RedisOnlineStore(RedisStoreConfig(), async_client=async_client),
                         load_compiled())


def test_a_blocked_event_loop_reads_as_overload_not_as_a_slow_store():
    import asyncio
    import time

    from mercury.serving.features import FeatureFetcher, SnapshotCache
    from mercury.serving.overload import LoopMonitor

    class SlowPipeline:
        def mget(self, keys): ...
        def hgetall(self, key): ...

        async def execute(self):
            await asyncio.sleep(0.2)

    class SlowRedis:
        def pipeline(self, transaction=False):
            return SlowPipeline()

        async def mget(self, keys):
            await asyncio.sleep(0.2)

    async def scenario():
        monitor = LoopMonitor(interval_s=0.002, max_lag_ms=20, decay=0.5)
        monitor.start()
        breaker = CircuitBreaker("redis", min_calls=1, reset_s=60)
        fetcher = FeatureFetcher(_reader(SlowRedis()), breaker, SnapshotCache(10, 1000),
                                 monitor)
        await asyncio.sleep(0.02)
        assert not monitor.overloaded
        sets = await fetcher.fetch("u1", ["spending"], 0, deadline_s=0.02)
        assert sets["spending"].reason == "deadline" and breaker.state == "open"  # slow store
        breaker.success()

        async def saturate():  # other requests' CPU work keeps stalling the loop
            while True:
                time.sleep(0.03)
                await asyncio.sleep(0)

        busy = asyncio.get_running_loop().create_task(saturate())
        await asyncio.sleep(0.1)
        assert monitor.overloaded and monitor.blames_us(0.02), monitor.lag_ms
        with pytest.raises(Overloaded):  # shed, never answered emptier
            await fetcher.fetch("u1", ["spending"], 0, deadline_s=0.02)
        busy.cancel()
        assert breaker.state == "closed"
        monitor.stop()

    asyncio.run(scenario())


def test_repeated_questions_are_answered_without_the_retrieval_thread():
    import asyncio
    from types import SimpleNamespace

    from mercury.retrieval.index import NO_FILTER
    from mercury.serving.documents import DocumentFetcher

    calls = []

    class Retriever:
        def retrieve(self, question, k, filters):
            calls.append(question)
            hit = SimpleNamespace(chunk_id="d:0:h", doc_id="d", title="t", heading="h",
                                  source_url=None, text="x", score=0.9)
            version = SimpleNamespace(name="v1", embedding_model="m", embedding_version="1")
            return SimpleNamespace(hits=[hit], version=version, result_cached=False)

    async def scenario():
        fetcher = DocumentFetcher(Retriever, CircuitBreaker("index"), max_waiting=1)
        first, _ = await fetcher.fetch("why  declined?", 5, NO_FILTER, 1.0)
        again, _ = await fetcher.fetch("why declined?", 5, NO_FILTER, 1.0)
        other, _ = await fetcher.fetch("why declined?", 3, NO_FILTER, 1.0)
        fetcher.close()
        return first, again, other

    first, again, other = asyncio.run(scenario())
    assert not first.cached and again.cached and again.chunks == first.chunks
    assert calls == ["why  declined?", "why declined?"]  # k=3 is another question


def test_a_redis_socket_timeout_while_saturated_is_not_the_stores_fault():
    import asyncio

    from mercury.serving.features import FeatureFetcher, SnapshotCache
    from mercury.serving.overload import LoopMonitor

    class RedisTimeout(Exception):
        pass

    RedisTimeout.__name__ = "TimeoutError"  # as redis.exceptions.TimeoutError is named

    class Pipeline:
        def mget(self, keys): ...
        def hgetall(self, key): ...

        async def execute(self):
            raise RedisTimeout("Timeout reading from socket")

    class Redis:
        def pipeline(self, transaction=False):
            return Pipeline()

        async def mget(self, keys):
            raise RedisTimeout("Timeout reading from socket")

    monitor = LoopMonitor()
    breaker = CircuitBreaker("redis", min_calls=1, reset_s=60)
    fetcher = FeatureFetcher(_reader(Redis()), breaker, SnapshotCache(10, 1000), monitor)
    monitor.lag_ms = 15.0  # the loop lags: saturated
    with pytest.raises(Overloaded):
        asyncio.run(fetcher.fetch("u1", ["spending"], 0, deadline_s=0.02))
    assert breaker.state == "closed"
    monitor.lag_ms = 0.0
    sets = asyncio.run(fetcher.fetch("u1", ["spending"], 0, deadline_s=0.02))
    assert sets["spending"].reason == "deadline" and breaker.state == "open"


def test_a_trial_that_says_nothing_about_the_store_does_not_wedge_the_breaker():
    clock = Clock()
    breaker = CircuitBreaker("redis", min_calls=1, reset_s=5, clock=clock)
    breaker.failure()
    clock.now = 5.0
    assert breaker.allow()  # the trial
    breaker.release()  # ... came back "overloaded": nothing learnt about Redis
    assert breaker.allow()  # the next call may try at once
    clock.now = 20.0  # a trial never reported on stops blocking after reset_s
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"


def test_a_timeout_handled_late_blames_the_process_even_before_the_smoothed_lag_rises():
    from mercury.serving.overload import LoopMonitor

    monitor = LoopMonitor()
    monitor.lag_ms = 0.0  # a stall that has only just begun is not in the average yet
    assert not monitor.blames_us(0.02, waited_s=0.0205)  # on time: the store was slow
    assert monitor.blames_us(0.02, waited_s=0.035)  # the timer fired 15 ms late: our loop
    assert not monitor.blames_us(0.02)


def test_the_demos_compliance_check_allows_a_question_asked_again_and_nothing_else():
    """A deadline missed on a busy machine makes the demo ask again: one more request and one
    more audited row, not a failure. A used answer missing from the view, or there twice, is."""
    from mercury.serving.demo import compliance_problems

    answers = [{"request_id": "r1"}, {"request_id": "r2"}]
    retried = {"analyst": [("r0",), ("r1",), ("r2",)], "compliance_investigator": [("r1",),
                                                                                   ("r2",)]}
    assert compliance_problems(retried, answers) == []
    lost = {"analyst": [("r1",)], "compliance_investigator": [("r1",), ("r2",), ("r2",)]}
    problems = compliance_problems(lost, answers)
    assert len(problems) == 2
    assert "as analyst: requests ['r2']" in problems[0]
    assert "as compliance_investigator: requests ['r2']" in problems[1]

"""The freshness probe: a canary transaction through the real pipeline every few seconds, timed
from the moment it is in the event log until the online store returns it. It exports the
transaction-freshness SLI that infra/monitoring/rules/freshness.yml alerts on
(``mercury_online_write_lag_seconds{stream="transactions"}``), so the SLI is measured the way
a user would see it: producer -> event log -> streaming job -> Redis.

Why a canary and not the writer's own timing: when the job is down the writer writes nothing
and observes nothing, and a silent SLI pages nobody. A canary that does not arrive is counted,
as late as the timeout, so an outage shows as late events within ``probe_timeout_s``.

Each canary is an AUTH of a user of its own (``monitoring.canary_user_prefix`` + a random
part), so no real user's context holds it; readable means the user's ``purchases`` hash exists.
The canaries are real records in the stream: they reach the lake too, under that prefix.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

if TYPE_CHECKING:
    from mercury.config import Settings
    from mercury.eventlog.base import EventProducer
    from mercury.online.store import OnlineStore

STREAM = "transactions"
# 5.0 is the SLO's threshold (the rules read le="5.0"); the rest place p50/p95 and outages.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def canary_record(user_id: str, now_ms: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "user_id": user_id, "account_id": "acc_canary",
            "merchant_id": "mch_canary", "amount": 1.0, "currency": "EUR",
            "event_type": "AUTH", "event_ts": now_ms, "ingest_ts": now_ms, "risk_score": 0.0,
            "mcc_code": "5999", "country": "DE", "purchase_id": f"pur_{user_id}",
            "auth_decision": "APPROVED"}


class FreshnessProbe:
    def __init__(self, settings: Settings, producer: EventProducer, store: OnlineStore,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from mercury.features.definition.compile import load_compiled

        self.settings = settings
        self.producer = producer
        self.store = store
        self.clock = clock
        self.purchases = load_compiled(["purchases"])[-1]  # the newest version
        self.pending: dict[str, float] = {}  # canary user -> when it was in the log
        self.lag = Histogram("mercury_online_write_lag_seconds",
                             "Event in the log -> readable in the online store (canaries)",
                             ["stream"], buckets=LAG_BUCKETS, registry=registry)
        self.sent = Counter("mercury_freshness_probe_sent_total", "Canaries written",
                            registry=registry)
        self.lost = Counter("mercury_freshness_probe_lost_total",
                            "Canaries not readable within monitoring.probe_timeout_s",
                            registry=registry)
        self.read_errors = Counter("mercury_freshness_probe_read_errors_total",
                                   "Reads of the online store that failed (by error type)",
                                   ["error"], registry=registry)

    def send_canary(self) -> str:
        from mercury.eventlog import encode_record

        user = f"{self.settings.monitoring.canary_user_prefix}{uuid.uuid4().hex[:16]}"
        record = canary_record(user, int(time.time() * 1000))
        self.producer.send(STREAM, encode_record(self.settings, STREAM, record), key=user)
        self.producer.flush()  # in the log from here: the clock starts
        self.pending[user] = self.clock()
        self.sent.inc()
        return user

    def check(self) -> list[float]:
        """Observe every pending canary that is readable now (its lag) or past the timeout
        (lost: observed as the timeout). Returns the lags observed."""
        from mercury.online import layout

        users = list(self.pending)
        if not users:
            return []
        try:
            hashes = self.store.read([layout.entity_key(self.purchases, u) for u in users])
        except Exception as exc:  # noqa: BLE001 - any binding's outage: the probe keeps timing
            # The store unreachable is an outage the SLI must show: nothing is readable, so
            # the canaries age into lost at the timeout, as when the job is down.
            self.read_errors.labels(error=type(exc).__name__).inc()
            hashes = [{} for _ in users]
        now, timeout, observed = self.clock(), self.settings.monitoring.probe_timeout_s, []
        for user, fields in zip(users, hashes, strict=True):
            age = now - self.pending[user]
            if fields or age >= timeout:
                del self.pending[user]
                if not fields:
                    self.lost.inc()
                lag = age if fields else timeout
                self.lag.labels(stream=STREAM).observe(lag)
                observed.append(lag)
        return observed

    def run(self, stop: threading.Event, on_observed: Callable[[list[float]], None] = print,
            poll_s: float = 0.05) -> None:
        """Send a canary every ``probe_interval_s`` and check the pending ones every
        ``poll_s`` until ``stop`` is set."""
        interval = self.settings.monitoring.probe_interval_s
        next_send = self.clock()
        while not stop.is_set():
            if self.clock() >= next_send:
                self.send_canary()
                next_send += interval
            observed = self.check()
            if observed:
                on_observed(observed)
            stop.wait(poll_s)

"""The simulation: events created in event-time order, emitted in arrival order.

A simulated clock runs from ``start`` over ``span``; each created event advances it by
``span / events``. Every event gets an arrival time (event time plus a small delivery delay,
a skew of up to ``max_skew`` for out-of-order events, or hours to days for late ones) and waits
in a heap until the clock reaches it; whatever is still waiting at the end arrives after.
Purchases follow their lifecycle: AUTH, then SETTLEMENT minutes to hours later or a REVERSAL,
and sometimes a chargeback days later. Follow-ups that would happen after the window are not
created. Nothing here reads the wall clock: the same knobs give byte-identical output.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect
from collections.abc import Callable

import orjson

from mercury.eventlog.base import EventProducer
from mercury.generator import anomalies
from mercury.generator.documents import DocumentSpec, build_documents, render
from mercury.generator.knobs import DAY_MS, HOUR_MS, MINUTE_MS, Knobs
from mercury.generator.manifest import Manifest
from mercury.generator.world import HOME_SHARE, User, build_world

TX, ACTIVITY, RISK, DOCS = "transactions", "user_activity", "risk_signals", "knowledge_documents"

# Share of created events per kind (MISSION.md peaks: 25K tx, 80K activity, 10K risk per s).
# An AUTH brings ~0.97 follow-ups, so new purchases are about half the transaction share.
_KIND_WEIGHTS = ((ACTIVITY, 0.69), ("auth", 0.113), (RISK, 0.085))
DECLINE_REASONS = (("INSUFFICIENT_FUNDS", 45), ("SUSPECTED_FRAUD", 15), ("LIMIT_EXCEEDED", 10),
                   ("INCORRECT_PIN", 8), ("CARD_FROZEN", 7), ("EXPIRED_CARD", 5),
                   ("MERCHANT_BLOCKED", 5), ("COUNTRY_BLOCKED", 5))
ACTIVITY_TYPES = (("APP_OPEN", 30), ("SCREEN_VIEW", 40), ("SEARCH", 8), ("CARD_FREEZE", 1),
                  ("CARD_UNFREEZE", 1), ("ASSISTANT_QUESTION", 15), ("ASSISTANT_FEEDBACK", 5))
SCREENS = ("home", "transactions", "card", "insights", "settings", "assistant")
QUESTIONS = ("Can I afford a {amount} {currency} purchase at {merchant}?",
             "Why was my card declined at {merchant}?",
             "Summarize my spending this week",
             "How much did I spend on {category} this month?",
             "Is there a fee for paying in {currency}?")
RISK_TYPES = (("VELOCITY_ALERT", 35), ("DEVICE_CHANGE", 30), ("ACCOUNT_TAKEOVER_SUSPECTED", 5),
              ("FRAUD_FLAG", 10), ("CLEARED", 20))
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


# RFC 4122 variant bits (10xx) for the first hex digit of the fourth group.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def _pick(rng: random.Random, items):
    """``rng.choice`` without its overhead; the generator's hot path calls this a lot."""
    return items[int(rng.random() * len(items))]


LOCALES = ("en-US", "en-GB", "fr-FR", "de-DE", "es-ES", "es-MX", "fr-CA", "it-IT", "nl-NL")


def profile_row(user: User, updated_at: int) -> dict:
    """The Postgres profile row of a user (see ``profiles_pg.COLUMNS``)."""
    return {"user_id": user.user_id, "full_name": user.full_name, "email": user.email,
            "locale": user.locale, "home_country": user.country, "risk_tier": user.risk_tier,
            "kyc_status": user.kyc_status,
            "notification_prefs": {"email": True, "push": user.card_last4 < "7000",
                                   "sms": user.card_last4 < "2000"},
            "updated_at": updated_at}


def _cumulative(pairs):
    labels, cum, total = [], [], 0.0
    for label, weight in pairs:
        total += weight
        labels.append(label)
        cum.append(total)
    return tuple(labels), tuple(cum), total


class TrafficGenerator:
    def __init__(self, knobs: Knobs, producer: EventProducer,
                 on_profile_changes: Callable[[list[dict]], None] | None = None,
                 progress: Callable[[int, int], None] | None = None):
        self.k = knobs
        self.out = producer
        self.on_profile_changes = on_profile_changes
        self.progress = progress
        self.rng = random.Random(knobs.seed)
        self.world = build_world(self.rng, knobs.users, knobs.merchants)
        self.documents = build_documents(self.rng, self.world.merchants, knobs.documents)
        self.manifest = Manifest(knobs.as_dict())
        self.end_ms = knobs.start_ms + knobs.span_ms
        self._heap: list[tuple] = []
        self._seq = 0
        self._created = 0
        self._profile_batch: list[dict] = []
        self._doc_revisions = {d.doc_id: 0 for d in self.documents}
        self._doc_deleted: set[str] = set()
        self._kinds = _cumulative(_KIND_WEIGHTS)
        self._declines = _cumulative(DECLINE_REASONS)
        self._activity = _cumulative(ACTIVITY_TYPES)
        self._risk = _cumulative(RISK_TYPES)
        self._doc_change_p = min(0.01, 1.5 * len(self.documents) / knobs.events)

    # ---- driving the clock -------------------------------------------------------------

    def run(self) -> Manifest:
        k = self.k
        step = k.span_ms / k.events
        self._profiles = {u.user_id: profile_row(u, k.start_ms - self.rng.randrange(365 * DAY_MS))
                          for u in self.world.users}
        self.manifest.profiles = len(self._profiles)
        if self.on_profile_changes:
            self.on_profile_changes(list(self._profiles.values()))
        for doc in self.documents:
            self._document_change(doc, "UPSERT", k.start_ms - self.rng.randrange(30 * DAY_MS))
        report_every = max(1, k.events // 100)
        next_report = report_every
        while self._created < k.events:
            now = int(k.start_ms + self._created * step)
            self._create_one(now)
            self._drain(now)
            if self.progress and self._created >= next_report:
                self.progress(self._created, k.events)
                next_report += report_every
        self._drain(None)
        self._flush_profiles()
        self.out.flush()
        return self.manifest

    def _create_one(self, now: int) -> None:
        rng = self.rng
        if rng.random() < self._doc_change_p:
            self._random_document_change(now)
            return
        if rng.random() < self.k.profile_update_rate:
            self._profile_update(self._pick_user(), now)
        labels, cum, total = self._kinds
        kind = labels[min(bisect(cum, rng.random() * total), len(labels) - 1)]
        user = self._pick_user()
        if kind == "auth":
            self._purchase(user, now)
        elif kind == ACTIVITY:
            self._activity_event(user, now)
        else:
            self._risk_signal(user, now, None)

    def _drain(self, now: int | None) -> None:
        heap = self._heap
        send = self.out.send
        lines = self.manifest.lines
        while heap and (now is None or heap[0][0] <= now):
            _, _, stream, key, payload, note = heapq.heappop(heap)
            position = send(stream, payload, key)
            lines[stream] += 1
            if note is not None:
                note["position"] = position

    # ---- events --------------------------------------------------------------------------

    def _pick_user(self) -> User:
        cum = self.world.user_weights
        return self.world.users[min(bisect(cum, self.rng.random() * cum[-1]), len(cum) - 1)]

    def _uuid(self) -> str:
        """A random (version 4) UUID drawn from the seeded generator."""
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"

    def _purchase(self, user: User, now: int) -> None:
        rng = self.rng
        merchant = _pick(rng, self.world.merchants_for(user, abroad=rng.random() > HOME_SHARE))
        amount = round(rng.uniform(merchant.amount_low, merchant.amount_high), 2)
        high_risk = user.risk_tier == "HIGH"
        risk_score = round(rng.random() ** (2 if high_risk else 4), 4)
        purchase_id = f"pur_{rng.getrandbits(64):016x}"
        account = _pick(rng, user.accounts)
        base = {"user_id": user.user_id, "account_id": account,
                "merchant_id": merchant.merchant_id, "currency": merchant.currency,
                "mcc_code": merchant.mcc, "country": merchant.country,
                "purchase_id": purchase_id, "card_last4": user.card_last4}
        declined = rng.random() < (0.15 if high_risk else 0.06)
        reason = None
        if declined:
            labels, cum, total = self._declines
            reason = labels[min(bisect(cum, rng.random() * total), len(labels) - 1)]
            if reason == "SUSPECTED_FRAUD":
                risk_score = round(0.8 + rng.random() * 0.2, 4)
        auth_id = self._uuid()
        self._transaction(base, auth_id, "AUTH", amount, now, risk_score,
                          auth_decision="DECLINED" if declined else "APPROVED",
                          decline_reason=reason)
        if declined:
            if reason == "SUSPECTED_FRAUD":
                self._risk_signal(user, now + rng.randrange(1_000, 60_000), auth_id,
                                  signal="FRAUD_FLAG")
            return
        roll = rng.random()
        if roll < 0.03:  # merchant voids the authorisation within the hour
            self._follow_up(base, "REVERSAL", amount, now + rng.randrange(MINUTE_MS, HOUR_MS),
                            risk_score, reversal_reason="MERCHANT_VOID")
            return
        if roll < 0.04:  # never captured: the hold expires after a week
            self._follow_up(base, "REVERSAL", amount, now + 7 * DAY_MS, risk_score,
                            reversal_reason="AUTH_EXPIRED")
            return
        # Settlement minutes to two days later; restaurants add a tip.
        delay = int(min(48 * HOUR_MS, max(5 * MINUTE_MS, rng.lognormvariate(15.8, 1.0))))
        settled = amount
        if merchant.category == "restaurants":
            settled = round(amount * (1 + rng.choice((0, 0.1, 0.15, 0.2))), 2)
        settle_ts = now + delay
        if self._follow_up(base, "SETTLEMENT", settled, settle_ts, risk_score) \
                and rng.random() < 0.006:
            self._follow_up(base, "REVERSAL", settled,
                            settle_ts + rng.randrange(DAY_MS, 10 * DAY_MS), risk_score,
                            reversal_reason="CHARGEBACK")

    def _follow_up(self, base: dict, event_type: str, amount: float, event_ts: int,
                   risk_score: float, reversal_reason: str | None = None) -> bool:
        if event_ts > self.end_ms:
            return False  # happens after the window this run covers
        self._transaction(base, self._uuid(), event_type, amount, event_ts, risk_score,
                          reversal_reason=reversal_reason)
        return True

    def _transaction(self, base: dict, event_id: str, event_type: str, amount: float,
                     event_ts: int, risk_score: float, auth_decision: str | None = None,
                     decline_reason: str | None = None, reversal_reason: str | None = None):
        record = {"event_id": event_id, "user_id": base["user_id"],
                  "account_id": base["account_id"], "merchant_id": base["merchant_id"],
                  "amount": amount, "currency": base["currency"], "event_type": event_type,
                  "event_ts": event_ts, "ingest_ts": 0, "risk_score": risk_score,
                  "mcc_code": base["mcc_code"], "country": base["country"],
                  "purchase_id": base["purchase_id"], "auth_decision": auth_decision,
                  "decline_reason": decline_reason, "reversal_reason": reversal_reason,
                  "card_last4": base["card_last4"]}
        self._emit(TX, record, base["user_id"], event_id)

    def _activity_event(self, user: User, now: int) -> None:
        rng = self.rng
        labels, cum, total = self._activity
        kind = labels[min(bisect(cum, rng.random() * total), len(labels) - 1)]
        question = None
        if kind == "ASSISTANT_QUESTION":
            merchant = _pick(rng, self.world.merchants)
            question = rng.choice(QUESTIONS).format(
                amount=rng.randrange(5, 900), currency=user.currency, merchant=merchant.name,
                category=merchant.category.replace("_", " "))
        event_id = self._uuid()
        record = {"event_id": event_id, "user_id": user.user_id,
                  "session_id": f"ses_{user.user_id[-8:]}_{now // (30 * MINUTE_MS)}",
                  "event_type": kind,
                  "screen": _pick(rng, SCREENS) if kind == "SCREEN_VIEW" else None,
                  "question_text": question,
                  "platform": ("IOS", "ANDROID", "WEB")[int(user.card_last4) % 3],
                  "app_version": "8.14.2", "device_id": f"dev_{user.user_id[-10:]}",
                  "event_ts": now, "ingest_ts": 0}
        self._emit(ACTIVITY, record, user.user_id, event_id)

    def _risk_signal(self, user: User, event_ts: int, related: str | None,
                     signal: str | None = None) -> None:
        if event_ts > self.end_ms:
            return
        rng = self.rng
        if signal is None:
            labels, cum, total = self._risk
            signal = labels[min(bisect(cum, rng.random() * total), len(labels) - 1)]
        severity = "HIGH" if signal == "FRAUD_FLAG" else _pick(rng, SEVERITIES[:3])
        event_id = self._uuid()
        record = {"event_id": event_id, "user_id": user.user_id, "account_id": user.accounts[0],
                  "signal_type": signal, "severity": severity,
                  "score": round(rng.random(), 4), "source": "fraud-model-v7",
                  "related_event_id": related, "event_ts": event_ts, "ingest_ts": 0,
                  "expires_ts": event_ts + rng.randrange(DAY_MS, 7 * DAY_MS)}
        self._emit(RISK, record, user.user_id, event_id)

    def _random_document_change(self, now: int) -> None:
        doc = _pick(self.rng, self.documents)
        deleting = doc.doc_id not in self._doc_deleted and self.rng.random() < 0.15
        self._document_change(doc, "DELETE" if deleting else "UPSERT", now)

    def _document_change(self, doc: DocumentSpec, op: str, updated_at: int) -> None:
        if op == "DELETE":
            self._doc_deleted.add(doc.doc_id)
            body = title = None
        else:
            self._doc_deleted.discard(doc.doc_id)
            revision = self._doc_revisions[doc.doc_id] + 1
            self._doc_revisions[doc.doc_id] = revision
            body, title = render(doc, revision - 1), doc.title
        change_id = self._uuid()
        record = {"change_id": change_id, "doc_id": doc.doc_id, "op": op,
                  "doc_type": doc.doc_type, "source_url": doc.source_url, "title": title,
                  "body": body, "language": doc.language, "merchant_id": doc.merchant_id,
                  "updated_at": updated_at, "ingest_ts": 0}
        self.manifest.documents[op] += 1
        self._emit(DOCS, record, doc.doc_id, change_id, time_field="updated_at")

    # ---- arrival and anomalies -----------------------------------------------------------

    def _emit(self, stream: str, record: dict, key: str, event_id: str,
              time_field: str = "event_ts") -> None:
        rng, k, manifest = self.rng, self.k, self.manifest
        self._created += 1
        manifest.generated[stream] += 1
        event_ts = record[time_field]
        roll = rng.random()
        if roll < k.late_rate:
            delay = rng.randint(k.lateness_min_ms, k.lateness_max_ms)
            manifest.late.append({"stream": stream, "event_id": event_id, "delay_ms": delay})
        elif roll < k.late_rate + k.out_of_order_rate:
            delay = rng.randint(0, k.max_skew_ms)
            manifest.out_of_order.append({"stream": stream, "event_id": event_id,
                                          "delay_ms": delay})
        else:
            delay = rng.randint(20, 2_000)
        arrival = event_ts + delay
        record["ingest_ts"] = arrival
        note = None
        roll = rng.random()
        if stream in anomalies.CAN_BREAK and roll < k.malformed_rate:
            kinds = anomalies.kinds_for(stream)
            kind = _pick(rng, kinds)
            payload = anomalies.break_record(rng, stream, record, kind)
            note = {"stream": stream, "event_id": event_id, "position": None}
            manifest.malformed[kind].append(note)
            self._push(arrival, stream, key, payload, note)
            return  # a broken record is not retried by its producer
        if stream in anomalies.CAN_BREAK and roll < k.malformed_rate + k.evolved_rate:
            fields = anomalies.evolve(rng, stream, record)
            manifest.evolved.append({"stream": stream, "event_id": event_id, "fields": fields})
        payload = orjson.dumps(record)
        self._push(arrival, stream, key, payload, None)
        if rng.random() < k.duplicate_rate:
            # A producer retry or replay: the same bytes again, a little or a lot later.
            again = arrival + (rng.randint(100, 30_000) if rng.random() < 0.8
                               else rng.randint(HOUR_MS, 6 * HOUR_MS))
            note = {"stream": stream, "event_id": event_id, "position": None}
            manifest.duplicates.append(note)
            self._push(again, stream, key, payload, note)

    def _push(self, arrival: int, stream: str, key: str, payload: bytes, note) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (arrival, self._seq, stream, key, payload, note))

    def _profile_update(self, user: User, now: int) -> None:
        """A user changes a setting, or risk/KYC reviews change their profile."""
        rng = self.rng
        row = dict(self._profiles[user.user_id])
        field = _pick(rng, ("locale", "risk_tier", "kyc_status", "notification_prefs"))
        if field == "locale":
            row["locale"] = _pick(rng, LOCALES)
        elif field == "risk_tier":
            row["risk_tier"] = _pick(rng, ("LOW", "MEDIUM", "HIGH"))
        elif field == "kyc_status":
            row["kyc_status"] = _pick(rng, ("VERIFIED", "PENDING", "EXPIRED", "REJECTED"))
        else:
            prefs = dict(row["notification_prefs"])
            channel = _pick(rng, sorted(prefs))
            prefs[channel] = not prefs[channel]
            row["notification_prefs"] = prefs
        row["updated_at"] = now
        self._profiles[user.user_id] = row
        self.manifest.profile_updates += 1
        if self.on_profile_changes is None:
            return
        # Each version must reach the table as its own change for CDC to see it.
        if any(r["user_id"] == user.user_id for r in self._profile_batch) \
                or len(self._profile_batch) >= 500:
            self._flush_profiles()
        self._profile_batch.append(row)

    def _flush_profiles(self) -> None:
        if self._profile_batch and self.on_profile_changes:
            self.on_profile_changes(self._profile_batch)
        self._profile_batch = []

"""The reference executor on literal, adversarial inputs, with hand-computed answers.

Every expectation below was worked out by hand from the rules in
``mercury.features.executors.reference``; each test names the wrong implementation it catches.
"""

import orjson
import pytest

from mercury.durations import DAY_MS, HOUR_MS, MINUTE_MS
from mercury.features.definition.dsl import Aggregate, FeatureSet, Filter, LastN, Source, eq
from mercury.features.definition.semantics import MAX_LATENESS_MS
from mercury.features.definitions.assistant import (
    declines,
    engagement,
    profile,
    purchases,
    risk,
    spending,
)
from mercury.features.definitions.entities import user
from mercury.features.executors.events import FeatureEvent
from mercury.features.executors.reference import reference_values, valid_record, values_for

T0 = 19_700 * DAY_MS  # midnight UTC, so aligned to every hop (5 min, 1 h, 1 d)
USER = "usr_00000001"
ALL_SETS = (spending, declines, purchases, risk, engagement, profile)


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


# ---- payloads shaped like the contracts (see mercury.generator.traffic) -------------------

MERCHANTS = {  # merchant_id: (mcc_code, country)
    "mer_grocer": ("5411", "FR"), "mer_diner": ("5812", "US"), "mer_tesco": ("5411", "GB")}


def tx(n, event_type, amount, event_ts, *, arrival=None, purchase="pur_a", currency="EUR",
       merchant="mer_grocer", decision=None, decline=None, reversal=None, user_id=USER,
       **extra):
    mcc, country = MERCHANTS[merchant]
    record = {"event_id": uid(n), "user_id": user_id, "account_id": "acc_01",
              "merchant_id": merchant, "amount": amount, "currency": currency,
              "event_type": event_type, "event_ts": event_ts,
              "ingest_ts": event_ts if arrival is None else arrival, "risk_score": 0.02,
              "mcc_code": mcc, "country": country, "purchase_id": purchase,
              "auth_decision": decision, "decline_reason": decline,
              "reversal_reason": reversal, "card_last4": "4242", **extra}
    return "transactions", orjson.dumps(record)


def auth(n, amount, event_ts, declined=None, **kw):
    return tx(n, "AUTH", amount, event_ts, decision="DECLINED" if declined else "APPROVED",
              decline=declined, **kw)


def settle(n, amount, event_ts, **kw):
    return tx(n, "SETTLEMENT", amount, event_ts, **kw)


def signal(n, signal_type, event_ts, *, expires=None, severity="HIGH", score=0.9,
           arrival=None):
    record = {"event_id": uid(n), "user_id": USER, "account_id": "acc_01",
              "signal_type": signal_type, "severity": severity, "score": score,
              "source": "fraud-model-v7", "related_event_id": None, "event_ts": event_ts,
              "ingest_ts": event_ts if arrival is None else arrival, "expires_ts": expires}
    return "risk_signals", orjson.dumps(record)


def activity(n, event_type, event_ts, session, user_id=USER):
    record = {"event_id": uid(n), "user_id": user_id, "session_id": session,
              "event_type": event_type, "screen": None,
              "question_text": "why was I declined?" if event_type == "ASSISTANT_QUESTION"
              else None, "platform": "IOS", "app_version": "8.14.2",
              "device_id": "dev_0000000001", "event_ts": event_ts, "ingest_ts": event_ts}
    return "user_activity", orjson.dumps(record)


def profile_row(kyc_status, updated_at):
    return {"user_id": USER, "full_name": "Ada Martin", "email": "ada@example.com",
            "locale": "fr-FR", "home_country": "FR", "risk_tier": "LOW",
            "kyc_status": kyc_status,
            "notification_prefs": {"email": True, "push": False, "sms": False},
            "updated_at": updated_at}


def change(op, lsn, commit_ts, before=None, after=None, emitted=None, key=None):
    record = {"before": before, "after": after, "op": op,
              "source": {"connector": "postgresql", "db": "mercury", "schema": "mercury",
                         "table": "user_profiles", "lsn": lsn, "tx_id": None,
                         "ts_ms": commit_ts},
              "ts_ms": commit_ts + 500 if emitted is None else emitted}
    if key is not None:  # v2: every change names its key; a delete carries nothing else
        record["key"] = {"user_id": key}
    return "user_profile_cdc", orjson.dumps(record)


def values(arrivals, as_of, feature_set, entity=USER):
    return reference_values(ALL_SETS, arrivals, as_of)[(feature_set.ref, entity)]


# ---- aggregates -------------------------------------------------------------------------

def test_currencies_are_never_summed_together_and_the_whole_value_shape():
    """Catches a cross-currency sum, "24h" used as a key instead of its label "1d", a missing
    group/currency nesting, and empty money windows given as 0.0 instead of {}."""
    arrivals = [
        settle(1, 7.0, T0 + 30 * MINUTE_MS, currency="GBP", merchant="mer_tesco"),
        settle(2, 10.0, T0 + HOUR_MS),
        settle(3, 5.0, T0 + 2 * HOUR_MS, currency="USD", merchant="mer_diner"),
        settle(4, 2.5, T0 + 3 * HOUR_MS + 30 * MINUTE_MS),
        auth(5, 40.0, T0 + 3 * HOUR_MS + 40 * MINUTE_MS, purchase="pur_b"),
    ]
    both = {"EUR": 12.5, "USD": 5.0, "GBP": 7.0}
    assert values(arrivals, T0 + 4 * HOUR_MS, spending) == {
        "settled_amount": {"1h": {"EUR": 2.5}, "1d": both, "7d": both, "30d": both},
        "settled_count": {"1d": 4, "7d": 4, "30d": 4},
        "authorised_amount": {"1h": {"EUR": 40.0}, "1d": {"EUR": 40.0}, "7d": {"EUR": 40.0}},
        "settled_by_category": {
            w: {"groceries": {"EUR": 12.5, "GBP": 7.0}, "eating_out": {"USD": 5.0}}
            for w in ("7d", "30d")},
        "largest_purchase": {"30d": {"EUR": 10.0, "USD": 5.0, "GBP": 7.0}},
        "average_purchase": {"30d": {"EUR": 6.25, "USD": 5.0, "GBP": 7.0}},
        "smallest_purchase": {"30d": {"EUR": 2.5, "USD": 5.0, "GBP": 7.0}},
        "merchants": {"7d": 3, "30d": 3},
        "reversed_amount": {"30d": {}},
    }


def test_declines_grouped_by_reason():
    arrivals = [
        auth(1, 9.0, T0 + HOUR_MS, declined="INSUFFICIENT_FUNDS", purchase="pur_1"),
        auth(2, 9.0, T0 + 2 * HOUR_MS, declined="INSUFFICIENT_FUNDS", purchase="pur_2"),
        auth(3, 9.0, T0 + 3 * HOUR_MS, declined="CARD_FROZEN", purchase="pur_3"),
        auth(4, 9.0, T0 + 3 * HOUR_MS, purchase="pur_4"),
    ]
    by_reason = {"INSUFFICIENT_FUNDS": 2, "CARD_FROZEN": 1}
    assert values(arrivals, T0 + 3 * HOUR_MS + 30 * MINUTE_MS, declines) == {
        "declined_count": {"1h": 1, "1d": 3, "7d": 3},
        "declined_by_reason": {"1d": by_reason, "7d": by_reason},
        "approved_count": {"1d": 1},
    }


# Settlements (EUR) at T0+8m (100), T0+10m (1) and T0+70m (1000); 1h window, 5-minute hops.
# As of t the window starts at tile_start(t) - 55m: (t - 1h, t] exactly only at a tile's last ms.
EDGE_EVENTS = [settle(1, 100.0, T0 + 8 * MINUTE_MS), settle(2, 1.0, T0 + 10 * MINUTE_MS),
               settle(3, 1000.0, T0 + 70 * MINUTE_MS)]


@pytest.mark.parametrize(("as_of", "expected"), [
    (T0 + 65 * MINUTE_MS - 1, {"EUR": 101.0}),  # last ms of a tile: window starts at T0+5m
    (T0 + 65 * MINUTE_MS, {"EUR": 1.0}),        # first ms of the next: starts at T0+10m
    (T0 + 67 * MINUTE_MS, {"EUR": 1.0}),        # exact sliding (t-1h, t] would still say 101
    (T0 + 70 * MINUTE_MS - 1, {"EUR": 1.0}),    # the event at exactly the window start counts
    (T0 + 70 * MINUTE_MS, {"EUR": 1000.0}),     # the window starts at T0+15m; t itself counts
])
def test_one_hour_window_edges_follow_the_tiles(as_of, expected):
    assert values(EDGE_EVENTS, as_of, spending)["settled_amount"]["1h"] == expected


@pytest.mark.parametrize(("as_of", "expected"), [
    (T0 + DAY_MS - 1, {"EUR": 1101.0}),  # tile [T0+23h, T0+1d): window starts at T0
    (T0 + DAY_MS, {"EUR": 1000.0}),      # hop is 1 h: starts at T0+1h, not at T0
])
def test_one_day_window_edges_use_hourly_tiles(as_of, expected):
    assert values(EDGE_EVENTS, as_of, spending)["settled_amount"]["1d"] == expected


def test_values_for_literal_events_filters_groups_and_plain_leaves():
    """Not money: plain leaves. Catches avg over all events instead of non-null values,
    counting null columns, a missing "unknown" group, and sum/max of an empty window."""
    plain = FeatureSet(
        "plain_amounts", version=1, entity=user, source=Source("transactions"), ttl="35d",
        owner="tests", features=(
            Aggregate("by_reason", "count", None, ("1h",), (eq("event_type", "AUTH"),),
                      group_by="decline_reason"),
            Aggregate("biggest", "max", "amount", ("1h",)),
            Aggregate("mean", "avg", "amount", ("1h",), (Filter("event_type", "ne", "AUTH"),)),
            Aggregate("total", "sum", "amount", ("1h",),
                      (Filter("country", "not_in", ("FR",)),)),
            Aggregate("with_reason", "count", "decline_reason", ("1h",)),
            Aggregate("without_reason", "count", None, ("1h",),
                      (Filter("decline_reason", "is_null"),)),
            Aggregate("reasons", "distinct_count", "decline_reason", ("1h",),
                      (Filter("decline_reason", "not_null"),)),
            LastN("last_two", n=2, item_key="purchase_id", fields=("amount", "country"),
                  status="event_type", status_rank=(("AUTH", 1), ("SETTLEMENT", 2))),
            LastN("last_three", n=3, item_key="purchase_id", fields=("amount", "country"),
                  status="event_type", status_rank=(("AUTH", 1), ("SETTLEMENT", 2))),
        ))

    def event(n, minute, event_type, amount, reason, country, purchase):
        ts = T0 + minute * MINUTE_MS
        return FeatureEvent(USER, uid(n), ts, ts, (ts, uid(n)), {
            "event_type": event_type, "amount": amount, "decline_reason": reason,
            "country": country, "purchase_id": purchase})

    events = [event(1, 10, "AUTH", 10.0, None, "FR", "b"),
              event(2, 20, "AUTH", 5.0, "CARD_FROZEN", "DE", "a"),
              event(3, 20, "AUTH", 30.0, "CARD_FROZEN", "DE", "c"),
              event(4, 30, "SETTLEMENT", 12.0, None, None, "b"),
              event(5, 40, "SETTLEMENT", None, None, "FR", None)]  # no item key: not an item
    c = {"item": "c", "ts": T0 + 20 * MINUTE_MS, "status": "AUTH", "amount": 30.0,
         "country": "DE"}
    a = {"item": "a", "ts": T0 + 20 * MINUTE_MS, "status": "AUTH", "amount": 5.0,
         "country": "DE"}
    # b: ts is its earliest event; amount from the settlement; country from the AUTH, the
    # settlement having none.
    b = {"item": "b", "ts": T0 + 10 * MINUTE_MS, "status": "SETTLEMENT", "amount": 12.0,
         "country": "FR"}
    assert values_for(plain, events, T0 + HOUR_MS - 1) == {USER: {
        "by_reason": {"1h": {"unknown": 1, "CARD_FROZEN": 2}},
        "biggest": {"1h": 30.0},
        "mean": {"1h": 12.0},
        "total": {"1h": 47.0},
        "with_reason": {"1h": 2},
        "without_reason": {"1h": 3},
        "reasons": {"1h": 1},
        "last_two": [c, a],  # equal ts: the greater item key first
        "last_three": [c, a, b],
    }}
    later = values_for(plain, events, T0 + DAY_MS)[USER]
    assert {name: v for name, v in later.items() if not name.startswith("last")} == {
        "by_reason": {"1h": {}}, "biggest": {"1h": None}, "mean": {"1h": None},
        "total": {"1h": 0.0}, "with_reason": {"1h": 0}, "without_reason": {"1h": 0},
        "reasons": {"1h": 0}}
    assert later["last_three"] == [c, a, b]  # LastN has no window


# ---- arrival: dedup, bitemporal, lateness, validation -----------------------------------

def test_a_repeated_event_id_keeps_the_first_arrival():
    """Catches counting both copies and last-arrival-wins; dedup is per feature set."""
    first = settle(1, 10.0, T0 + HOUR_MS)
    retry = settle(1, 99.0, T0 + HOUR_MS, arrival=T0 + HOUR_MS + 1_000)
    same_id_elsewhere = signal(1, "VELOCITY_ALERT", T0 + HOUR_MS)
    result = reference_values(ALL_SETS, [first, retry, same_id_elsewhere], T0 + 2 * HOUR_MS)
    assert result[(spending.ref, USER)]["settled_amount"]["1d"] == {"EUR": 10.0}
    assert result[(spending.ref, USER)]["settled_count"]["1d"] == 1
    assert result[(risk.ref, USER)]["signals"]["1d"] == 1


def test_a_late_settlement_counts_only_once_it_has_arrived():
    """Bitemporal: catches counting by event time alone (which leaks the future)."""
    arrivals = [auth(1, 20.0, T0 + HOUR_MS),
                activity(2, "APP_OPEN", T0 + 3 * HOUR_MS, "ses_1"),
                settle(3, 20.0, T0 + 2 * HOUR_MS, arrival=T0 + 8 * HOUR_MS)]
    before = reference_values(ALL_SETS, arrivals, T0 + 3 * HOUR_MS)
    assert before[(spending.ref, USER)]["settled_amount"]["1d"] == {}
    assert before[(spending.ref, USER)]["authorised_amount"]["1d"] == {"EUR": 20.0}
    assert before[(purchases.ref, USER)]["recent_purchases"][0]["status"] == "PENDING"
    after = reference_values(ALL_SETS, arrivals, T0 + 9 * HOUR_MS)
    assert after[(spending.ref, USER)]["settled_amount"]["1h"] == {}
    assert after[(spending.ref, USER)]["settled_amount"]["1d"] == {"EUR": 20.0}
    assert after[(purchases.ref, USER)]["recent_purchases"][0]["status"] == "SETTLED"


def test_events_too_late_never_count():
    """Beyond MAX_LATENESS (30 d) after its event time an arrival is dropped, even for LastN,
    which has no window to hide it; 29 days late still counts. Catches ignoring lateness."""
    assert MAX_LATENESS_MS == 30 * DAY_MS
    arrivals = [
        auth(1, 10.0, T0, purchase="pur_ok"),
        settle(2, 10.0, T0 + HOUR_MS, purchase="pur_ok", arrival=T0 + HOUR_MS + 31 * DAY_MS),
        auth(3, 20.0, T0 + DAY_MS, purchase="pur_old", arrival=T0 + 32 * DAY_MS),
        auth(4, 30.0, T0 + 2 * DAY_MS, purchase="pur_29", arrival=T0 + 31 * DAY_MS),
        auth(5, 40.0, T0 + DAY_MS, purchase="pur_x", user_id="usr_only_late",
             arrival=T0 + 32 * DAY_MS),
    ]
    result = reference_values(ALL_SETS, arrivals, T0 + 33 * DAY_MS)
    recent = result[(purchases.ref, USER)]["recent_purchases"]
    assert [(p["item"], p["status"]) for p in recent] == [("pur_29", "PENDING"),
                                                          ("pur_ok", "PENDING")]
    assert (purchases.ref, "usr_only_late") not in result


def test_invalid_payloads_are_ignored_and_unknown_fields_still_count():
    """Catches skipping validation (a bad currency would appear as its own key) and a strict
    reader that rejects fields added by producers ahead of the contract."""
    arrivals = [
        settle(1, 10.0, T0 + HOUR_MS),
        ("transactions", b'{"event_id": "00000000-0000-4000-8000-0000000000'),  # cut short
        settle(3, 1000.0, T0 + HOUR_MS, currency="EURO"),
        settle(4, "5.00", T0 + HOUR_MS),
        settle(5, 2.0, T0 + 2 * HOUR_MS, loyalty_tier="gold", promo={"code": "SPRING"}),
    ]
    assert [valid_record(*a) is not None for a in arrivals] == [True, False, False, False, True]
    got = values(arrivals, T0 + 3 * HOUR_MS, spending)
    assert got["settled_amount"]["1d"] == {"EUR": 12.0}
    assert got["settled_count"]["1d"] == 2


def test_entities_without_counting_events_are_absent():
    arrivals = [activity(1, "APP_OPEN", T0, "ses_1", user_id="usr_app_only"),
                settle(2, 5.0, T0, user_id="usr_not_yet", arrival=T0 + 2 * HOUR_MS),
                settle(3, 5.0, T0 - 40 * DAY_MS, user_id="usr_idle")]
    result = reference_values(ALL_SETS, arrivals, T0 + HOUR_MS)
    assert set(result) == {(engagement.ref, "usr_app_only"), (spending.ref, "usr_idle"),
                           (purchases.ref, "usr_idle"), (declines.ref, "usr_idle")}
    assert result[(spending.ref, "usr_idle")]["settled_amount"]["30d"] == {}
    assert result[(declines.ref, "usr_idle")]["declined_count"] == {"1h": 0, "1d": 0, "7d": 0}


# ---- last N: a purchase's lifecycle ------------------------------------------------------

def test_settlement_arriving_before_its_auth_then_a_chargeback():
    """Catches taking status or amount from the last arrival, ordering items by their newest
    event, and reading events that have not arrived yet."""
    arrivals = [
        settle(1, 23.0, T0 + 2 * HOUR_MS, purchase="pur_p"),  # the tip makes 20 -> 23
        auth(2, 20.0, T0 + HOUR_MS, purchase="pur_p", arrival=T0 + 2 * HOUR_MS + 5 * MINUTE_MS),
        auth(3, 15.0, T0 + 90 * MINUTE_MS, purchase="pur_q", declined="INSUFFICIENT_FUNDS"),
        tx(4, "REVERSAL", 23.0, T0 + 5 * DAY_MS, purchase="pur_p", reversal="CHARGEBACK"),
    ]
    common = {"merchant_id": "mer_grocer", "category": "groceries", "currency": "EUR",
              "country": "FR"}
    q = {"item": "pur_q", "ts": T0 + 90 * MINUTE_MS, "status": "DECLINED", **common,
         "amount": 15.0, "decline_reason": "INSUFFICIENT_FUNDS", "reversal_reason": None}
    p = {"item": "pur_p", "ts": T0 + HOUR_MS, "status": "SETTLED", **common, "amount": 23.0,
         "decline_reason": None, "reversal_reason": None}

    def recent(as_of):
        return values(arrivals, as_of, purchases)["recent_purchases"]

    # Before the AUTH arrives the purchase is known from its settlement alone.
    assert recent(T0 + 2 * HOUR_MS + MINUTE_MS) == [{**p, "ts": T0 + 2 * HOUR_MS}, q]
    assert recent(T0 + 3 * HOUR_MS) == [q, p]
    assert recent(T0 + 6 * DAY_MS) == [q, {**p, "status": "CHARGED_BACK",
                                           "reversal_reason": "CHARGEBACK"}]
    money = values(arrivals, T0 + 6 * DAY_MS, spending)
    assert money["reversed_amount"] == {"30d": {"EUR": 23.0}}
    assert money["settled_amount"]["7d"] == {"EUR": 23.0}


# ---- latest: risk flags, card lock, profile CDC ------------------------------------------

RISK = [
    signal(1, "FRAUD_FLAG", T0 - HOUR_MS, expires=T0 + 5 * DAY_MS, severity="MEDIUM", score=0.5),
    signal(2, "FRAUD_FLAG", T0, expires=T0 + 2 * DAY_MS, score=0.95),
    signal(3, "VELOCITY_ALERT", T0 + HOUR_MS, severity="LOW", score=0.3),
    signal(4, "DEVICE_CHANGE", T0 + 3 * HOUR_MS, score=0.7),   # newer, arrives first
    signal(5, "DEVICE_CHANGE", T0 + 2 * HOUR_MS, score=0.6, arrival=T0 + 4 * HOUR_MS),
]


def flag(severity, score, ts):
    return {"severity": severity, "score": score, "source": "fraud-model-v7",
            "related_event_id": None, "ts": ts}


FRAUD = flag("HIGH", 0.95, T0)
VELOCITY = flag("LOW", 0.3, T0 + HOUR_MS)
DEVICE = flag("HIGH", 0.7, T0 + 3 * HOUR_MS)


@pytest.mark.parametrize(("as_of", "flags"), [
    (T0 + DAY_MS, {"FRAUD_FLAG": FRAUD, "VELOCITY_ALERT": VELOCITY, "DEVICE_CHANGE": DEVICE}),
    (T0 + 2 * DAY_MS - 1, {"FRAUD_FLAG": FRAUD, "VELOCITY_ALERT": VELOCITY,
                           "DEVICE_CHANGE": DEVICE}),
    # expires_ts reached: gone, and the older, unexpired fraud flag does not come back
    (T0 + 2 * DAY_MS, {"VELOCITY_ALERT": VELOCITY, "DEVICE_CHANGE": DEVICE}),
    (T0 + HOUR_MS + 7 * DAY_MS, {"VELOCITY_ALERT": VELOCITY, "DEVICE_CHANGE": DEVICE}),
    (T0 + HOUR_MS + 7 * DAY_MS + 1, {"DEVICE_CHANGE": DEVICE}),  # older than max_age 7d
    (T0 + 8 * DAY_MS, {}),
])
def test_risk_flags_expire_and_age_out(as_of, flags):
    assert values(RISK, as_of, risk)["flags"] == flags


def test_risk_signal_counts_use_the_day_tiles():
    # As of T0+1d the 24h window starts at T0+1h: signals at T0-1h and T0 are out.
    assert values(RISK, T0 + DAY_MS, risk)["signals"] == {"1d": 3, "7d": 5}
    assert values(RISK, T0 + 8 * DAY_MS, risk) == {"flags": {}, "signals": {"1d": 0, "7d": 0}}


def test_card_lock_is_the_latest_freeze_or_unfreeze():
    """Catches ignoring ``where`` (a newer screen view would win)."""
    arrivals = [activity(1, "CARD_FREEZE", T0 + HOUR_MS, "ses_1"),
                activity(2, "APP_OPEN", T0 + HOUR_MS + MINUTE_MS, "ses_1"),
                activity(3, "CARD_UNFREEZE", T0 + 2 * HOUR_MS, "ses_2"),
                activity(4, "ASSISTANT_QUESTION", T0 + 2 * HOUR_MS + 5 * MINUTE_MS, "ses_2"),
                activity(5, "SCREEN_VIEW", T0 + 3 * HOUR_MS, "ses_3")]
    assert values(arrivals, T0 + 4 * HOUR_MS, engagement) == {
        "card_lock": {"event_type": "CARD_UNFREEZE", "ts": T0 + 2 * HOUR_MS},
        "assistant_questions": {"1d": 1, "7d": 1},
        "sessions": {"7d": 3, "30d": 3},
    }
    assert values(arrivals, T0 + 90 * MINUTE_MS, engagement)["card_lock"] == {
        "event_type": "CARD_FREEZE", "ts": T0 + HOUR_MS}


def test_profile_from_cdc_follows_lsn_not_arrival_and_a_delete_clears_it():
    """Catches last-arrival-wins (the create arrives after the update) and a delete ignored."""
    pending, verified = profile_row("PENDING", T0), profile_row("VERIFIED", T0 + HOUR_MS)
    arrivals = [
        change("u", 200, T0 + HOUR_MS, before=pending, after=verified),
        change("c", 100, T0, after=pending, emitted=T0 + HOUR_MS + 2_000),
        change("c", 100, T0, after=pending, emitted=T0 + HOUR_MS + 2_000),  # a replay
        change("d", 300, T0 + 2 * HOUR_MS, before=verified),
    ]
    expected = {name: verified[name] for name in (
        "locale", "home_country", "risk_tier", "kyc_status", "notification_prefs",
        "updated_at")}
    # (updated_at equals the commit time here, so this holds whether normalise times a change
    # by the row's updated_at or by the commit.)
    assert (profile.ref, USER) not in reference_values(ALL_SETS, arrivals, T0 - 1)
    assert values(arrivals, T0 + 90 * MINUTE_MS, profile) == {
        "profile": {**expected, "ts": T0 + HOUR_MS}}
    assert values(arrivals, T0 + 3 * HOUR_MS, profile) == {"profile": None}


def test_a_key_only_delete_clears_the_profile_as_a_full_one_does():
    """Catches a reader that still looks for the entity in ``before`` (a v2 delete has none:
    its event would vanish and the profile would stay served)."""
    pending, verified = profile_row("PENDING", T0), profile_row("VERIFIED", T0 + HOUR_MS)
    head = [change("c", 100, T0, after=pending, key=USER),
            change("u", 200, T0 + HOUR_MS, before=pending, after=verified, key=USER)]
    v1 = [*head, change("d", 300, T0 + 2 * HOUR_MS, before=verified)]
    v2 = [*head, change("d", 300, T0 + 2 * HOUR_MS, key=USER)]
    for as_of in (T0 + 90 * MINUTE_MS, T0 + 3 * HOUR_MS):
        assert reference_values(ALL_SETS, v2, as_of) == reference_values(ALL_SETS, v1, as_of)
    assert values(v2, T0 + 3 * HOUR_MS, profile) == {"profile": None}

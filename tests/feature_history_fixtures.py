"""A small adversarial transaction stream over a few days, for the feature history, its marts
and the feature_backfill DAG; and an oracle for the marts written straight from the records.

``history_stream(first_day, days)`` builds valid transaction records (``lake_fixtures.
transaction``) for six users: approved and declined authorisations, settlements in three
currencies, a chargeback, plus what the batch path must survive: a producer retry with another
amount arriving later (the first arrival wins), events arriving more than a day late (they
count from their arrival on, not from their event day), one arriving after the lateness
limit (it never counts), and a user whose only event arrives late.

``expected_daily`` recomputes the marts' numbers from those records with the bitemporal rule
(ARCHITECTURE.md) written out directly, without the feature DSL, the reference executor or
Spark: at the end of day D an event counts iff it is its id's first arrival, it arrived and
happened by then and it is not too late; a window of length W then covers (t - W, t].
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

from mercury.features.definition.semantics import MAX_LATENESS_MS
from tests.lake_fixtures import transaction

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
USERS = 6
CURRENCIES = ("USD", "EUR", "JPY")


def day_start_ms(day: date) -> int:
    return int(datetime.combine(day, time(), UTC).timestamp() * 1000)


def day_end_ms(day: date) -> int:
    return day_start_ms(day) + DAY_MS - 1


def history_stream(first_day: date, days: int, per_day: int = 24) -> list[dict]:
    """Records in arrival order (see the module doc); ``per_day`` events per day."""
    base = day_start_ms(first_day)
    records: list[dict] = []
    step = DAY_MS // per_day
    for n in range(days * per_day):
        event_ts = base + n * step + (n * 7_919) % step  # spread inside each slot
        kind = n % 5
        fields = {"event_type": "AUTH", "auth_decision": "APPROVED", "decline_reason": None}
        if kind == 1:
            fields = {"event_type": "AUTH", "auth_decision": "DECLINED",
                      "decline_reason": ("INSUFFICIENT_FUNDS", "SUSPECTED_FRAUD")[n % 2]}
        elif kind in (2, 3):
            fields = {"event_type": "SETTLEMENT", "auth_decision": None, "decline_reason": None}
        elif kind == 4 and n % 3 == 0:
            fields = {"event_type": "REVERSAL", "auth_decision": None, "decline_reason": None,
                      "reversal_reason": "CHARGEBACK"}
        # Every 9th event arrives 30 hours late: it counts from its arrival on.
        delay = 30 * HOUR_MS if n % 9 == 4 else 200 + n % 1000
        records.append(transaction(
            n, user_id=f"usr_{n % USERS}", merchant_id=f"mer_{(n * 5) % 13}",
            currency=CURRENCIES[(n // USERS) % 3], amount=round(2.5 + (n * 37 % 400) / 4, 2),
            event_ts=event_ts, ingest_ts=event_ts + delay, **fields))
    last = base + days * DAY_MS
    # A retry of event 2 (a settlement) with another amount, arriving later: ignored.
    retry = dict(records[2], amount=9_999.0, ingest_ts=records[2]["ingest_ts"] + HOUR_MS)
    # A settlement that arrives after the lateness limit: never counts.
    too_late = transaction(10_001, user_id="usr_1", event_type="SETTLEMENT",
                           auth_decision=None, currency="USD", amount=777.0,
                           event_ts=last - MAX_LATENESS_MS - 2 * DAY_MS,
                           ingest_ts=last - 2 * HOUR_MS)
    # A user whose only event (a settlement of day 0) arrives on the last day.
    late_user = transaction(10_002, user_id="usr_late", event_type="SETTLEMENT",
                            auth_decision=None, currency="EUR", amount=42.0,
                            event_ts=base + 3 * HOUR_MS, ingest_ts=last - 3 * HOUR_MS)
    records += [retry, too_late, late_user]
    return sorted(records, key=lambda r: r["ingest_ts"])


def _first_arrivals(records: list[dict]) -> list[dict]:
    first: dict[str, dict] = {}
    for record in records:
        kept = first.get(record["event_id"])
        if kept is None or record["ingest_ts"] < kept["ingest_ts"]:
            first[record["event_id"]] = record
    return list(first.values())


def expected_daily(records: list[dict], first_day: date,
                   last_day: date) -> tuple[dict, dict, dict]:
    """``(daily, by_currency, by_reason)``: ``daily[(user, day)]`` holds the counts of
    fct_user_daily_spending, ``by_currency[(user, day, currency)]`` the settled, authorised and
    reversed sums and the 30d largest/smallest/average of fct_user_daily_spending_by_currency,
    ``by_reason[(user, day, reason)]`` the counts of fct_user_daily_declines_by_reason."""
    events = _first_arrivals(records)
    daily, by_currency, by_reason = {}, {}, {}
    day = first_day
    while day <= last_day:
        t = day_end_ms(day)
        counting = [r for r in events if r["ingest_ts"] <= t and r["event_ts"] <= t
                    and r["event_ts"] >= r["ingest_ts"] - MAX_LATENESS_MS]
        per_user = defaultdict(list)
        for r in counting:
            per_user[r["user_id"]].append(r)
        for user, rows in per_user.items():
            def within(length_ms, rows=rows, t=t):
                return [r for r in rows if r["event_ts"] > t - length_ms]

            def settled(length_ms):
                return [r for r in within(length_ms) if r["event_type"] == "SETTLEMENT"]

            def auth(decision, length_ms):
                return [r for r in within(length_ms) if r["event_type"] == "AUTH"
                        and r["auth_decision"] == decision]

            declined_1d, approved_1d = len(auth("DECLINED", DAY_MS)), len(auth("APPROVED", DAY_MS))
            daily[(user, day)] = {
                "settled_count_1d": len(settled(DAY_MS)),
                "settled_count_7d": len(settled(7 * DAY_MS)),
                "settled_count_30d": len(settled(30 * DAY_MS)),
                "merchants_7d": len({r["merchant_id"] for r in settled(7 * DAY_MS)}),
                "merchants_30d": len({r["merchant_id"] for r in settled(30 * DAY_MS)}),
                "settled_currencies_30d": len({r["currency"] for r in settled(30 * DAY_MS)}),
                "declined_count_1h": len(auth("DECLINED", HOUR_MS)),
                "declined_count_1d": declined_1d,
                "declined_count_7d": len(auth("DECLINED", 7 * DAY_MS)),
                "approved_count_1d": approved_1d,
                "decline_rate_1d": (declined_1d / (declined_1d + approved_1d)
                                    if declined_1d + approved_1d else None),
            }
            sums = {
                "settled_amount_1h": settled(HOUR_MS), "settled_amount_1d": settled(DAY_MS),
                "settled_amount_7d": settled(7 * DAY_MS),
                "settled_amount_30d": settled(30 * DAY_MS),
                "authorised_amount_1h": auth("APPROVED", HOUR_MS),
                "authorised_amount_1d": auth("APPROVED", DAY_MS),
                "authorised_amount_7d": auth("APPROVED", 7 * DAY_MS),
                "reversed_amount_30d": [r for r in within(30 * DAY_MS)
                                        if r["event_type"] == "REVERSAL"],
            }
            currencies = {r["currency"] for group in sums.values() for r in group}
            for currency in currencies:
                row = {name: sum(r["amount"] for r in group if r["currency"] == currency)
                       for name, group in sums.items()}
                amounts = [r["amount"] for r in settled(30 * DAY_MS)
                           if r["currency"] == currency]
                row["largest_purchase_30d"] = max(amounts, default=None)
                row["smallest_purchase_30d"] = min(amounts, default=None)
                row["average_purchase_30d"] = sum(amounts) / len(amounts) if amounts else None
                by_currency[(user, day, currency)] = row
            declined_7d = auth("DECLINED", 7 * DAY_MS)
            for reason in {r["decline_reason"] or "unknown" for r in declined_7d}:
                by_reason[(user, day, reason)] = {
                    name: sum(1 for r in auth("DECLINED", length)
                              if (r["decline_reason"] or "unknown") == reason)
                    for name, length in (("declined_count_1d", DAY_MS),
                                         ("declined_count_7d", 7 * DAY_MS))}
        day += timedelta(days=1)
    return daily, by_currency, by_reason

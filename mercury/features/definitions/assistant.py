"""What the financial assistant needs to know about a user, by the questions it answers.

- "Can I afford this?": recent settled spend and pending authorisations per currency, the
  usual ticket size, and the recent purchases themselves.
- "Why was my card declined?": recent declines by reason, the purchase list with decline
  reasons, open risk flags, whether the card is frozen, KYC status.
- "Summarize my spending this week": settled spend by category and merchant count over 7d.
"""

from mercury.features.definition.dsl import (
    Aggregate,
    Derived,
    FeatureSet,
    LastN,
    Latest,
    Source,
    eq,
    isin,
)
from mercury.features.definitions.entities import user

OWNER = "assistant-context"

transactions = Source(
    "transactions", money=(("amount", "currency"),),
    derived=(Derived("category", "mcc_category", ("mcc_code",)),
             Derived("status", "purchase_status",
                     ("event_type", "auth_decision", "reversal_reason"))))
settled = (eq("event_type", "SETTLEMENT"),)
approved = (eq("event_type", "AUTH"), eq("auth_decision", "APPROVED"))
declined = (eq("event_type", "AUTH"), eq("auth_decision", "DECLINED"))

spending = FeatureSet(
    "spending", version=1, entity=user, source=transactions, ttl="35d", owner=OWNER,
    description="Settled and authorised spend per currency, by window and category.",
    features=(
        Aggregate("settled_amount", "sum", "amount", ("1h", "24h", "7d", "30d"), settled),
        Aggregate("settled_count", "count", None, ("24h", "7d", "30d"), settled),
        Aggregate("authorised_amount", "sum", "amount", ("1h", "24h", "7d"), approved),
        Aggregate("settled_by_category", "sum", "amount", ("7d", "30d"), settled,
                  group_by="category"),
        Aggregate("largest_purchase", "max", "amount", ("30d",), settled),
        Aggregate("average_purchase", "avg", "amount", ("30d",), settled),
        Aggregate("smallest_purchase", "min", "amount", ("30d",), settled),
        Aggregate("merchants", "distinct_count", "merchant_id", ("7d", "30d"), settled),
        Aggregate("reversed_amount", "sum", "amount", ("30d",), (eq("event_type", "REVERSAL"),)),
    ))

# v2, filled beside v1 and promoted after a shadow comparison
# (``mercury.features.lifecycle.bluegreen``).
# Unchanged features keep v1's definitions exactly, so the comparison can prove them equal;
# changed: a quarter of settled spend and merchants (90d, so the hash lives 95d); new: settled
# spend by country, for "how much did I spend abroad".
_unchanged = tuple(f for f in spending.features if f.name not in ("settled_amount", "merchants"))
spending_v2 = FeatureSet(
    "spending", version=2, entity=user, source=transactions, ttl="95d", owner=OWNER,
    description="Settled and authorised spend per currency, by window, category and country.",
    features=(
        Aggregate("settled_amount", "sum", "amount", ("1h", "24h", "7d", "30d", "90d"), settled),
        *_unchanged,
        Aggregate("merchants", "distinct_count", "merchant_id", ("7d", "30d", "90d"), settled),
        Aggregate("settled_by_country", "sum", "amount", ("30d", "90d"), settled,
                  group_by="country"),
    ))

declines = FeatureSet(
    "declines", version=1, entity=user, source=transactions, ttl="35d", owner=OWNER,
    description="Declined authorisations and why.",
    features=(
        Aggregate("declined_count", "count", None, ("1h", "24h", "7d"), declined),
        Aggregate("declined_by_reason", "count", None, ("24h", "7d"), declined,
                  group_by="decline_reason"),
        Aggregate("approved_count", "count", None, ("24h",), approved),
    ))

purchases = FeatureSet(
    "purchases", version=1, entity=user, source=transactions, ttl="35d", owner=OWNER,
    description="The user's latest purchases with where each stands.",
    features=(
        LastN("recent_purchases", n=20, item_key="purchase_id",
              fields=("merchant_id", "category", "amount", "currency", "decline_reason",
                      "reversal_reason", "country"),
              status="status",
              status_rank=(("PENDING", 1), ("DECLINED", 1), ("SETTLED", 2), ("REVERSED", 3),
                           ("CHARGED_BACK", 4)),
              where=(isin("event_type", "AUTH", "SETTLEMENT", "REVERSAL"),)),
    ))

risk = FeatureSet(
    "risk", version=1, entity=user, source=Source("risk_signals"), ttl="8d", owner=OWNER,
    description="The newest risk signal of each type, while it holds.",
    features=(
        Latest("flags", fields=("severity", "score", "source", "related_event_id"),
               per="signal_type", max_age="7d", expires="expires_ts"),
        Aggregate("signals", "count", None, ("24h", "7d")),
    ))

engagement = FeatureSet(
    "engagement", version=1, entity=user, source=Source("user_activity"), ttl="35d",
    owner=OWNER, description="How the user uses the app and the assistant; card freezes.",
    features=(
        Latest("card_lock", fields=("event_type",),
               where=(isin("event_type", "CARD_FREEZE", "CARD_UNFREEZE"),)),
        Aggregate("assistant_questions", "count", None, ("24h", "7d"),
                  (eq("event_type", "ASSISTANT_QUESTION"),)),
        Aggregate("sessions", "distinct_count", "session_id", ("7d", "30d")),
    ))

profile = FeatureSet(
    "profile", version=1, entity=user, source=Source("user_profile_cdc", envelope="debezium"),
    ttl="400d", owner=OWNER, description="Profile and preferences, from Postgres CDC.",
    features=(
        Latest("profile", fields=("locale", "home_country", "risk_tier", "kyc_status",
                                  "notification_prefs", "updated_at")),
    ))

ASSISTANT_SETS = (spending, spending_v2, declines, purchases, risk, engagement, profile)

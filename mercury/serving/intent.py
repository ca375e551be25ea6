"""The cheap step before any fetch: what does this question need?

Each answer costs store reads, and a document search costs a question embedding (~20 ms of
CPU) plus a kNN query; most questions need only part of a user's context. Keyword rules in the
four served languages pick an intent, and the intent names what to fetch. It is deliberately
a table: a data engineer can read and extend it, and a test pins each row. A question that
matches nothing gets the broad plan (everything), because a missing part costs more than a
wasted fetch. The caller may also name the parts itself (``options.parts``).

Parts are ``features.<feature set>`` and ``documents``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

DOCUMENTS = "documents"


@dataclass(frozen=True)
class Plan:
    intent: str
    feature_sets: tuple[str, ...]
    documents: bool
    doc_type: str | None = None  # restricts the document search when the intent implies one

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(f"features.{name}" for name in self.feature_sets) + (
            (DOCUMENTS,) if self.documents else ())


# Order matters: the first intent whose pattern matches wins ("why was my purchase declined"
# is about a decline, not a purchase summary).
_RULES: tuple[tuple[Plan, tuple[str, ...]], ...] = (
    (Plan("why_declined", ("declines", "purchases", "risk", "engagement", "profile"),
          documents=True, doc_type="CARD_POLICY"),
     ("declin", "refus", "rejected", "denied", "blocked", "didn't go through",
      "did not go through", "not go through", "failed payment", "payment failed",
      "rechaz", "denegad", "abgelehnt", "verweigert", "gesperrt", "bloqu")),
    (Plan("can_afford", ("spending", "purchases", "profile"), documents=False),
     ("afford", "enough money", "budget", "can i buy", "can i spend", "permettre",
      "les moyens", "assez d'argent", "puedo pagar", "permitirme", "alcanza",
      "leisten", "genug geld")),
    (Plan("spending_summary", ("spending", "purchases"), documents=False),
     ("summar", "spent", "spend", "spending", "expenses", "breakdown", "résum", "resum",
      "dépens", "depens", "gastado", "gastos", "ausgaben", "ausgegeben", "zusammenfass")),
    (Plan("card_status", ("engagement", "risk", "profile"), documents=True,
          doc_type="CARD_POLICY"),
     ("frozen", "freeze", "unfreeze", "locked", "gelée", "geler", "congelad",
      "eingefroren", "sperre")),
    (Plan("merchant_help", ("purchases",), documents=True, doc_type="MERCHANT_HELP"),
     ("refund", "return", "cancel", "subscription", "rembours", "annul", "reembols",
      "devoluc", "erstatt", "rückgabe", "kündig")),
)

BROAD = Plan("general", ("spending", "declines", "purchases", "risk", "engagement", "profile"),
             documents=True)


def _normal(text: str) -> str:
    # Lower case, curly apostrophes straightened; accents kept (patterns carry both forms).
    text = unicodedata.normalize("NFC", text).lower().replace("\u2019", "'")
    return re.sub(r"\s+", " ", text)


def plan_for(question: str) -> Plan:
    text = _normal(question)
    for plan, patterns in _RULES:
        if any(p in text for p in patterns):
            return plan
    return BROAD


def plan_from_parts(parts: list[str], known_sets: set[str]) -> Plan:
    """The caller's own choice of parts (``options.parts``); unknown parts are an error."""
    sets, documents = [], False
    for part in parts:
        if part == DOCUMENTS:
            documents = True
        elif part.startswith("features.") and part[len("features."):] in known_sets:
            sets.append(part[len("features."):])
        else:
            known = ", ".join([DOCUMENTS] + [f"features.{s}" for s in sorted(known_sets)])
            raise ValueError(f"unknown part {part!r}; known parts: {known}")
    return Plan("caller_chosen", tuple(dict.fromkeys(sets)), documents)

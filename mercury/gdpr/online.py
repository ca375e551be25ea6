"""Erasure in the online store: every key of the user, whatever set or version.

Keys carry the entity in a hash tag (``fs:{u:<id>}:<set>:v<n>``, ``mercury.online.layout``),
so one SCAN over the tagged keys finds every version, retired ones included, and warm-start
state. One scan serves a whole batch of subjects.
"""

from __future__ import annotations

from collections import Counter

from mercury.gdpr.evidence import Removal
from mercury.gdpr.subject import Subject
from mercury.online.store import OnlineStore

USER_TAG = "u"


def erase_online(store: OnlineStore, subjects: list[Subject]) -> list[Removal]:
    by_tag = {f"{{{USER_TAG}:{s.user_id}}}": s for s in subjects}
    doomed: dict[str, set[str]] = {s.ticket: set() for s in subjects}
    for key in store.scan(f"*{{{USER_TAG}:*"):
        if (who := by_tag.get(_tag(key))) is not None:
            doomed[who.ticket].add(key)
    removals = []
    for ticket, keys in doomed.items():
        removed = store.delete(sorted(keys))
        # What kinds of keys went, without the ids: "<set>:v<n>" after the tag.
        kinds = Counter(key.split("}:", 1)[-1] for key in keys)
        removals.append(Removal(ticket, "online_store", "user keys", removed,
                                {"by_set": dict(kinds)} if kinds else {}))
    return removals


def _tag(key: str) -> str:
    start = key.find("{")
    end = key.find("}", start)
    return key[start:end + 1] if start >= 0 and end > start else ""

"""Erasure in the online store: every key of the user, whatever set or version.

Keys carry the entity in a hash tag (``fs:{u:<id>}:<set>:v<n>``, ``mercury.online.layout``),
so one SCAN over the tagged keys finds every version, retired ones included, and warm-start
state. One scan serves a whole batch of subjects.
"""

from __future__ import annotations

from collections import Counter

from mercury.online.store import OnlineStore
from mercury.privacy.erasure.evidence import Removal
from mercury.privacy.erasure.subject import Subject

USER_TAG = "u"


def erase_online(store: OnlineStore, subjects: list[Subject]) -> list[Removal]:
    tags = {f"{{{USER_TAG}:{s.user_id}}}" for s in subjects}
    doomed = sorted({key for key in store.scan(f"*{{{USER_TAG}:*")
                     if _tag(key) in tags})
    removed = store.delete(doomed)
    # What kinds of keys went, without the ids: "<set>:v<n>" after the tag.
    kinds = Counter(key.split("}:", 1)[-1] for key in doomed)
    return [Removal("online_store", "user keys", removed, {"by_set": dict(kinds)})]


def _tag(key: str) -> str:
    start = key.find("{")
    end = key.find("}", start)
    return key[start:end + 1] if start >= 0 and end > start else ""

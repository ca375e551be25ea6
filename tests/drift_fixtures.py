"""A model version's training set and a day of its served values, from one distribution.

Users draw declines and engagement feature values (``declines.v1``, ``engagement.v1``: counts
per window, decline reasons, the card lock state) from fixed distributions. The training set
is written as ``spark_jobs.training_set`` lays it out (one JSON column per feature, a null for
a user with no counting event); the served values are inference_audit records as the context
API ships them. ``shift`` moves one feature of the served side on purpose.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

MODEL = "assistant-llm-2026-11"
SETS = ("declines.v1", "engagement.v1")
DAY_MS = 86_400_000
DAY0_MS = 1_796_083_200_000  # 2026-12-01T00:00:00Z
REASONS = ("INSUFFICIENT_FUNDS", "DO_NOT_HONOR", "EXPIRED_CARD", "SUSPECTED_FRAUD")


def user_values(rng: np.random.Generator, shift: bool = False,
                shift_lock: bool = False) -> dict[str, dict | None]:
    """One user's values, ``{set: {feature: value}}``; a set is None when the user had no
    counting event (a tenth of users have no declines history). ``shift`` moves the daily
    approvals up, ``shift_lock`` makes frozen cards five times as common."""
    declined_1d = int(rng.poisson(0.8))
    reasons = {r: int(n) for r, n in zip(REASONS, rng.multinomial(declined_1d, [.5, .3, .1, .1]),
                                         strict=True) if n}
    approved = int(rng.poisson(6.0))
    if shift:  # the deliberate shift: many more approvals a day
        approved += int(rng.poisson(6.0)) + 4
    declines = None if rng.random() < 0.1 else {
        "declined_count": {"1h": int(rng.poisson(0.1)), "1d": declined_1d,
                           "7d": declined_1d + int(rng.poisson(3.0))},
        "declined_by_reason": {"1d": reasons, "7d": reasons},
        "approved_count": {"1d": approved},
    }
    lock = rng.choice(["none", "CARD_FREEZE", "CARD_UNFREEZE"],
                      p=[.3, .5, .2] if shift_lock else [.7, .1, .2])
    engagement = {
        "card_lock": None if lock == "none" else {"event_type": str(lock),
                                                 "ts": DAY0_MS - int(rng.integers(DAY_MS))},
        "assistant_questions": {"1d": int(rng.poisson(1.5)), "7d": int(rng.poisson(7.0))},
        "sessions": {"7d": int(rng.poisson(12.0)), "30d": int(rng.poisson(45.0))},
    }
    return {"declines": declines, "engagement": engagement}


def write_training_set(folder: Path, users: int, seed: int) -> Path:
    """The training set's Parquet folder: label columns, then ``<set>__<feature>`` JSON."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"entity_id": [], "label_ts": [], "label": []}
    for i in range(users):
        values = user_values(rng)
        columns["entity_id"].append(f"u{i}")
        columns["label_ts"].append(DAY0_MS - 30 * DAY_MS + i)
        columns["label"].append(int(rng.random() < 0.1))
        for set_name, features in (("declines", ("declined_count", "declined_by_reason",
                                                 "approved_count")),
                                   ("engagement", ("card_lock", "assistant_questions",
                                                   "sessions"))):
            for feature in features:
                value = values[set_name]
                cell = None if value is None or value[feature] is None \
                    else orjson.dumps(value[feature]).decode()
                columns.setdefault(f"{set_name}__{feature}", []).append(cell)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / "part-00000.parquet")
    (folder / "_SUCCESS").write_text("")  # as Spark leaves it
    return folder


def empty_declines() -> dict:
    """What the online reader serves for a user with no declines event."""
    return {"declined_count": {"1h": 0, "1d": 0, "7d": 0},
            "declined_by_reason": {"1d": {}, "7d": {}}, "approved_count": {"1d": 0}}


def audit_records(requests: int, seed: int, shift: bool = False, *, shift_lock: bool = False,
                  model: str = MODEL, start_ms: int = DAY0_MS) -> list[dict]:
    """inference_audit records of one day, each serving both sets at version 1."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(requests):
        values = user_values(rng, shift=shift, shift_lock=shift_lock)
        values["declines"] = values["declines"] or empty_declines()
        at = start_ms + i * (DAY_MS // requests)
        records.append({
            "request_id": f"req-{seed}-{i}", "event_ts": at, "caller": "llm-gateway",
            "user_token": "ut_" + f"{i:032x}", "question": "enc1:k1:bm9uY2U=",
            "intent": "why_declined", "retrieved_chunk_ids": [],
            "feature_versions": {"declines": 1, "engagement": 1},
            "features_as_of": at, "llm_model_version": model,
            "served_features_json": orjson.dumps(values).decode(),
            "stage_latency_ms": {"features": 3.0}, "total_latency_ms": 9.0,
            "degraded_parts": [],
        })
    return records


def make_world(tmp: Path) -> Path:
    """A settings file with ``MODEL`` registered, its training set (3,000 users), and two
    days of its served values in the audit lake (3,000 requests each): 2026-12-01 from the
    training distribution, 2026-12-02 with the daily approvals shifted. Also five requests
    of another model version and one of another declines version, to be left out."""
    from mercury.config import load_settings
    from mercury.eventlog import encode_record, open_producer
    from mercury.lake.load import load_stream
    from tests.conftest import write_config

    training = write_training_set(tmp / "training" / MODEL, users=3000, seed=1)
    path = write_config(tmp, drift={"models": {MODEL: {"training_set": str(training),
                                                       "feature_sets": list(SETS)}}})
    with mock.patch.dict(os.environ, {"MERCURY_CONFIG": str(path)}):
        settings = load_settings()
    same = audit_records(3000, seed=2)
    shifted = audit_records(3000, seed=3, shift=True, start_ms=DAY0_MS + DAY_MS)
    other_model = audit_records(5, seed=4, model="assistant-llm-2026-10")
    other_version = audit_records(1, seed=5)[0] | {"request_id": "req-v2",
                                                   "feature_versions": {"declines": 2}}
    with open_producer(settings, writer_id="drift_test") as producer:
        for record in [*same, *shifted, *other_model, other_version]:
            producer.send("inference_audit", encode_record(settings, "inference_audit", record),
                          key=record["request_id"])
    report = load_stream(settings, "inference_audit")
    assert report.inserted == 3000 + 3000 + 5 + 1, report.summary()
    return path

"""The demo's real-time path: the online-features job on the local Flink cluster, deployed
as the ``streaming_features`` DAG deploys it, fed by the demo's event log, and a new card
purchase timed from the event log into Redis and shown in the context API's answer.

The timing is the one ``bench/online_features_freshness.py`` measures: from the file's rename
into the log (when Flink can first see it) until the user's purchase list in Redis holds it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson

from mercury.config import FileEventLogConfig, Settings

JOB_NAME = "mercury-demo-online-features"
CATCH_UP_TIMEOUT_S = 1_200.0  # the demo's ~210K lines at ~2K lines/s, on a busy machine
VISIBLE_TIMEOUT_S = 60.0


def _sets() -> list[Any]:
    from mercury.features.definition.compile import load_compiled

    return [fs for fs in load_compiled() if fs.version == 1]


def deploy_and_catch_up(settings: Settings, config_path: Path) -> str:
    """A fresh SQL job over the demo's whole event log, caught up; every set's v1 served.
    Returns the job id. A job of an earlier demo run is stopped first (its state belongs to
    another world)."""
    from mercury.eventlog.file_log import FileEventReader
    from mercury.online.factory import open_store
    from mercury.ops import deployments, online_job
    from mercury.ops.flink_rest import FlinkRestClient

    client = FlinkRestClient(settings.flink.rest_url)
    if deployments.load(settings, JOB_NAME) is not None:
        deployments.stop(client, settings, JOB_NAME)
    sets = _sets()
    args = ["--config", str(config_path), "--engine", "sql",
            "--feature-sets", ",".join(fs.ref for fs in sets)]
    record = deployments.deploy(client, settings, JOB_NAME, online_job.JOB_FILE, args,
                                restore=False)
    client.wait_until_running(record.job_id, timeout_s=300)
    reader = FileEventReader(cast(FileEventLogConfig, settings.event_log).root)
    lines = sum(reader.count(s) for s in sorted({fs.source.stream for fs in sets}))
    started = time.monotonic()
    last_report = [0.0]

    def report(progress: online_job.Progress) -> None:
        if time.monotonic() - last_report[0] >= 10:
            last_report[0] = time.monotonic()
            print(f"   flink job {record.job_id[:8]}: {progress.lines_read:,}/{lines:,} lines "
                  f"({time.monotonic() - started:.0f} s)", flush=True)

    online_job.wait_caught_up(client, record.job_id, lines, timeout_s=CATCH_UP_TIMEOUT_S,
                              report=report)
    print(f"online features: the Flink SQL job read {lines:,} lines in "
          f"{time.monotonic() - started:.0f} s (job {record.job_id})")
    store = open_store(settings)
    try:
        for name in sorted({fs.name for fs in sets}):
            store.set_active(name, 1)
    finally:
        store.close()
    return record.job_id


def stop(settings: Settings) -> None:
    """Stop the demo's job with a savepoint, as a redeploy does: it stops consuming the
    machine once the demo has shown what it does."""
    from mercury.ops import deployments
    from mercury.ops.flink_rest import FlinkRestClient

    if deployments.load(settings, JOB_NAME) is not None:
        deployments.stop(FlinkRestClient(settings.flink.rest_url), settings, JOB_NAME)


def new_purchase(user_id: str, amount: float, currency: str) -> dict[str, Any]:
    """An approved AUTH happening now, as the card network's producer writes it."""
    now_ms = int(time.time() * 1000)
    return {"event_id": str(uuid.uuid4()), "user_id": user_id, "account_id": f"acc_{user_id}",
            "merchant_id": "mch_demo_live", "amount": amount, "currency": currency,
            "event_type": "AUTH", "event_ts": now_ms, "ingest_ts": now_ms, "risk_score": 0.05,
            "mcc_code": "5651", "country": "DE", "purchase_id": f"pur_live_{uuid.uuid4().hex[:12]}",
            "auth_decision": "APPROVED"}


def time_a_purchase(settings: Settings, user_id: str,
                    answer_for: Callable[[str], dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    """Write one purchase of ``user_id`` into the event log, wait for it in Redis, then ask the
    context API (``answer_for(user_id)``). Returns (ms from the log to Redis, the answer)."""
    from mercury.eventlog.file_log import FileEventProducer
    from mercury.online import layout
    from mercury.online.factory import open_store
    from mercury.online.redis_store import RedisOnlineStore

    purchases = next(fs for fs in _sets() if fs.name == "purchases")
    event = new_purchase(user_id, 249.0, "EUR")
    store = cast(RedisOnlineStore, open_store(settings))  # the demo runs on the local Redis
    key, field = layout.entity_key(purchases, user_id), layout.list_field("recent_purchases")
    marker = event["purchase_id"].encode()
    producer = FileEventProducer(cast(FileEventLogConfig, settings.event_log).root,
                                 writer_id="demo_live", fsync=False)
    try:
        producer.send("transactions", orjson.dumps(event))
        producer.flush()  # renamed into place: Flink can see it from now
        written = time.monotonic()
        while marker not in (cast("bytes | None", store.client.hget(key, field)) or b""):
            if time.monotonic() - written > VISIBLE_TIMEOUT_S:
                raise TimeoutError(f"purchase {event['purchase_id']} not in Redis after "
                                   f"{VISIBLE_TIMEOUT_S:.0f} s")
            time.sleep(0.005)
        visible_ms = (time.monotonic() - written) * 1000
    finally:
        store.close()
    answer = answer_for(user_id)
    items = ((answer["features"].get("purchases") or {}).get("values") or {}) \
        .get("recent_purchases") or []
    if not any(item.get("item") == event["purchase_id"] for item in items):
        raise RuntimeError(f"the context API's answer for {user_id} lacks purchase "
                           f"{event['purchase_id']}")
    return visible_ms, answer

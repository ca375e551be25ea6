"""A small served world for the context API tests: a private Redis, features, an index.

- Redis: a private ``redis-server`` on a free port (real Redis, started and stopped here), so
  fault tests can stop it without touching the shared server on 6379.
- Features: a generated world (adversarial defaults: duplicates, late, out-of-order,
  malformed) run through ``OnlineExecutor`` into that Redis, every set promoted.
- Documents: the world's knowledge documents rebuilt into a local index with the
  ``hashing-384`` model (a second to build; retrieval quality is not what these tests check).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mercury.config import Settings, load_settings
from tests.conftest import free_port, write_config

EVENTS, USERS = 6_000, 60
STREAMS = ("transactions", "user_activity", "risk_signals")


class PrivateRedis:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc = None

    def start(self) -> None:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis on {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@dataclass
class ServedWorld:
    settings: Settings
    config_path: Path
    redis: PrivateRedis
    users: list[str]
    records: dict  # stream -> valid records as sent (for scans of what must never be served)


def _valid(stream: str, payload: bytes):
    """The record as its producer sent it, if it is valid: the card digits and personal
    values in it are what must never be served (the validator's own record has them masked
    or dropped)."""
    import orjson

    from mercury.contracts import registry
    from mercury.contracts.validation import validator

    verdict = validator(registry.stream(stream).schema_subject).validate_bytes(payload)
    return orjson.loads(payload) if verdict.ok else None


def build_served_world(tmp: Path) -> ServedWorld:
    from mercury.eventlog.file_log import FileEventReader
    from mercury.generator.knobs import Knobs
    from mercury.generator.run import generate
    from mercury.retrieval.chunking import ChunkingSpec
    from mercury.retrieval.embedding import open_embedder
    from mercury.retrieval.factory import open_index
    from mercury.retrieval.rebuild import rebuild
    from mercury.serving.demo import load_online_features

    private = PrivateRedis(tmp)
    private.start()
    path = write_config(tmp, online_store={"port": private.port, "db": 0},
                        retrieval={"embedding_model": "hashing-384"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(path))
        settings = load_settings()
    # The API answers as of now, and windows slide: traffic of the last eight days, not of a
    # fixed date, so the 30-day values these tests look for exist whatever day they run.
    day = 86_400_000
    start_ms = (int(time.time() * 1000) // day - 8) * day
    generate(settings, Knobs(events=EVENTS, users=USERS, start_ms=start_ms), with_postgres=False,
             show_progress=False)
    load_online_features(settings)  # what make demo does: the executor into Redis, v1 served
    records = {}
    reader = FileEventReader(settings.event_log.root)
    for stream in STREAMS:
        for message in reader.read(stream):
            if (record := _valid(stream, message.value)) is not None:
                records.setdefault(stream, []).append(record)
    cfg = settings.retrieval
    outcome = rebuild(settings, open_index(cfg), open_embedder(cfg.embedding_model),
                      ChunkingSpec(cfg.max_tokens, cfg.overlap_tokens),
                      created_at_ms=int(time.time() * 1000), log=lambda _m: None)
    assert outcome.decision.swap, outcome.summary()
    users = sorted({r["user_id"] for r in records["transactions"]})
    return ServedWorld(settings, path, private, users, records)


def write_profiles(settings: Settings, profiles: dict[str, tuple[str, str]]) -> None:
    """A profile for each user (``user -> (home_country, risk_tier)``) into the served world's
    store, as Debezium change events through the streaming executor: the world's generator
    runs without Postgres, so its users have no profile otherwise."""
    import orjson

    from mercury.features.definition.compile import load_compiled
    from mercury.features.executors.reference import valid_record
    from mercury.features.executors.streaming.executor import DictState, OnlineExecutor
    from mercury.online.factory import open_store

    executor = OnlineExecutor(load_compiled())
    at = int(time.time() * 1000) - 3_600_000
    writes = []
    for lsn, (user, (country, tier)) in enumerate(sorted(profiles.items()), start=1):
        row = {"user_id": user, "full_name": "Test Person", "email": f"{user}@example.com",
               "locale": "en-GB", "home_country": country, "risk_tier": tier,
               "kyc_status": "VERIFIED", "notification_prefs": {"email": True},
               "updated_at": at + lsn}
        change = {"before": None, "after": row, "op": "c", "ts_ms": at + lsn,
                  "source": {"connector": "postgresql", "db": "mercury", "schema": "mercury",
                             "table": "user_profiles", "lsn": lsn, "tx_id": lsn,
                             "ts_ms": at + lsn}}
        record = valid_record("user_profile_cdc", orjson.dumps(change))
        assert record is not None, "a profile change the contract refuses"
        for key, _ in executor.route("user_profile_cdc", record):
            writes += executor.process(key, "user_profile_cdc", record, DictState()).writes
    store = open_store(settings)
    store.write(writes)
    store.close()

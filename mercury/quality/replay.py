"""Replaying dead letters once their cause is fixed, idempotently.

Design notes: docs/STREAMING.md, "Replaying dead letters". The ledger of what was replayed
is in the shared operational store (``mercury.quality.replay_ledger``).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from mercury.config import Settings
from mercury.contracts import registry
from mercury.contracts.payloads import decode
from mercury.contracts.validation import validator
from mercury.eventlog import encode_record, open_consumer, open_producer, writer_schemas
from mercury.ops.state import LockWaitTimeout
from mercury.quality.dead_letters import raw_payload
from mercury.quality.replay_ledger import Ledger, open_ledger


class ReplayError(Exception):
    """The replay cannot run as asked; the message says why."""


@dataclass
class ReplayResult:
    stream: str
    dry_run: bool
    read: int = 0              # dead letters read, repeats included
    replayed: int = 0          # produced again (in a dry run: would be)
    already_replayed: int = 0  # in the ledger from an earlier run
    repeated: int = 0          # same dlq_id seen again in this run
    still_failing: Counter = field(default_factory=Counter)  # rule broken now -> count

    def as_dict(self) -> dict:
        """Plain JSON-able values (an XCom, a log line)."""
        return {**vars(self), "still_failing": dict(self.still_failing)}

    def summary(self) -> str:
        failing = ", ".join(f"{rule} {n:,}" for rule, n in sorted(self.still_failing.items()))
        verb = "would replay" if self.dry_run else "replayed"
        return (f"{self.stream}: read {self.read:,} dead letters, {verb} {self.replayed:,}, "
                f"already replayed {self.already_replayed:,}, still failing "
                f"{sum(self.still_failing.values()):,}{f' ({failing})' if failing else ''}"
                f"{f', repeated dlq ids {self.repeated:,}' if self.repeated else ''}")


def replay_dead_letters(settings: Settings, stream: str, *, dry_run: bool = False,
                        progress: Callable[[ReplayResult], None] | None = None,
                        batch_size: int = 1000,
                        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                        ) -> ReplayResult:
    """Replay the stream's dead letters that pass the current contract (module doc).

    ``dry_run`` validates and counts but produces nothing and writes no ledger. ``progress``
    is called with the running result after every batch.
    """
    spec = registry.stream(stream)
    if spec.dead_letter_stream is None:
        raise ReplayError(f"{stream} has no dead-letter stream")
    check = validator(spec.schema_subject)
    schemas_by_id = writer_schemas(settings)
    result = ReplayResult(stream, dry_run)
    seen: set[str] = set()
    with _ledger(settings, stream, writable=not dry_run) as ledger:
        done = ledger.replayed_ids()
        producer = None if dry_run else open_producer(settings, writer_id="dlqreplay")
        # Never committed: every run reads the whole dead-letter stream.
        with open_consumer(settings, f"dlq-replay.{stream}", [spec.dead_letter_stream]) as dlq:
            for batch in dlq.read_to_end(max_messages=batch_size):
                entries = []
                for message in batch:
                    letter = decode(message.value, schemas_by_id)
                    dlq_id = letter["dlq_id"]
                    if dlq_id in seen:
                        result.repeated += 1
                        continue
                    seen.add(dlq_id)
                    if dlq_id in done:
                        result.already_replayed += 1
                        continue
                    raw = raw_payload(letter)
                    verdict = check.validate_bytes(raw, schemas_by_id)
                    if not verdict.ok:
                        result.still_failing[verdict.rule] += 1
                        continue
                    result.replayed += 1
                    if producer is not None:
                        record = cast("dict[str, Any]", verdict.record)  # the verdict is ok
                        # Exactly the bytes received, unless the contract dropped a sensitive
                        # field: then the cleaned record, so the log never holds it again.
                        payload = encode_record(settings, stream, record) \
                            if verdict.dropped_fields else raw
                        position = producer.send(stream, payload, key=_key(record, spec.key))
                        entries.append({"dlq_id": dlq_id, "event_id": letter.get("event_id"),
                                        "rule": letter["rule"], "position": position,
                                        "replayed_at": now_ms()})
                if producer is not None and entries:
                    producer.flush()        # durable in the stream first,
                    ledger.append(entries)  # then recorded as replayed
                result.read += len(batch)
                if progress is not None:
                    progress(result)
    return result


def progress_printer(out=sys.stderr, every_s: float = 2.0) -> Callable[[ReplayResult], None]:
    """A progress line at most every ``every_s`` seconds (appended: fine in logs too)."""
    last = time.perf_counter()

    def report(result: ReplayResult) -> None:
        nonlocal last
        if time.perf_counter() - last >= every_s:
            last = time.perf_counter()
            print(f"... {result.summary()}", file=out, flush=True)

    return report


def _key(record: dict, path: str) -> str | None:
    """The partition key (``user_id``, ``after.user_id`` ...) of a validated record."""
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return None if value is None else str(value)


@contextmanager
def _ledger(settings: Settings, stream: str, writable: bool) -> Iterator[Ledger]:
    """The stream's ledger in the shared store; a writable one holds the stream's lock, so a
    second replay (another worker's retry) waits and then finds this one's records."""
    def waiting() -> None:
        print(f"another replay of {stream} is running: waiting for it to finish",
              file=sys.stderr, flush=True)

    try:
        with open_ledger(settings, stream, writable=writable, on_wait=waiting) as ledger:
            yield ledger
    except LockWaitTimeout as exc:
        raise ReplayError(f"{exc}; try again later") from exc

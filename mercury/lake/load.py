"""Validate a stream of the event log into its lake table; failures go to its dead-letter
stream with the rule they broke. Resumable and safe to re-run.

The loader reads as a consumer group up to the end positions taken at its start (a quiet
moment does not end it early, and what arrives meanwhile waits for the next run), writes the
lake (upsert by event id) and the dead letters (ids derived from source positions) first, and
commits its offsets last: a crash in between replays the batch, which changes nothing. This is
the batch twin of the streaming job's validate-and-route step (the streaming issue); it feeds
the lake locally and in tests.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from mercury.config import Settings
from mercury.contracts import registry
from mercury.contracts.validation import validator
from mercury.eventlog import encode_record, open_consumer, open_producer, writer_schemas
from mercury.lake import tables
from mercury.lake.metrics import record_load
from mercury.privacy.tombstones import Tombstones
from mercury.quality.dead_letters import make_dead_letter


@dataclass
class LoadReport:
    stream: str
    read: int = 0
    valid: int = 0
    inserted: int = 0
    dead_letters: Counter = field(default_factory=Counter)
    unknown_fields: Counter = field(default_factory=Counter)
    dropped_fields: Counter = field(default_factory=Counter)  # "<path> (<rule>)": never stored
    erased: int = 0  # records of erased users, dropped (late data must not bring them back)

    def summary(self) -> str:
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(self.dead_letters.items()))
        extra = ", ".join(f"{name} {n}" for name, n in self.unknown_fields.most_common(5))
        dropped = ", ".join(f"{name} {n}" for name, n in self.dropped_fields.most_common(5))
        return (f"{self.stream}: read {self.read:,}, valid {self.valid:,}, new in lake "
                f"{self.inserted:,}, dead-lettered {sum(self.dead_letters.values()):,}"
                f"{f' ({rules})' if rules else ''}"
                f"{f'; unknown fields passed: {extra}' if extra else ''}"
                f"{f'; sensitive fields dropped: {dropped}' if dropped else ''}"
                f"{f'; {self.erased:,} of erased users dropped' if self.erased else ''}")


def load_stream(settings: Settings, stream_name: str, batch_size: int = 50_000,
                group: str | None = None, now_ms=lambda: int(time.time() * 1000)) -> LoadReport:
    spec = registry.stream(stream_name)
    if spec.dead_letter_stream is None or spec.lake_table is None:
        raise ValueError(f"{stream_name} has no lake table or dead-letter stream to load into")
    check = validator(spec.schema_subject)
    schemas_by_id = writer_schemas(settings)
    report = LoadReport(stream_name)
    consumer = open_consumer(settings, group or f"lake-loader.{stream_name}", [stream_name])
    dead_letters = open_producer(settings, writer_id="lakeloader")
    tables.ensure_table(settings, stream_name)
    tombstones = Tombstones.of(settings)
    try:
        for batch in consumer.read_to_end(max_messages=batch_size):
            good = []
            for message in batch:
                verdict = check.validate_bytes(message.value, schemas_by_id)
                if verdict.ok:
                    good.append(cast("dict[str, Any]", verdict.record))  # the verdict is ok
                    report.unknown_fields.update(verdict.unknown_fields)
                    report.dropped_fields.update(f"{path} ({rule})"
                                                 for path, rule in verdict.dropped_fields)
                    continue
                letter = make_dead_letter(stream_name, message.position, message.value,
                                          verdict, now_ms())
                dead_letters.send(spec.dead_letter_stream,
                                  encode_record(settings, spec.dead_letter_stream, letter),
                                  key=letter["dlq_id"])
                report.dead_letters[verdict.rule] += 1
            report.read += len(batch)
            report.valid += len(good)
            good, dropped = tombstones.keep(good)
            report.erased += dropped
            if good:
                report.inserted += tables.upsert(settings, stream_name, good).inserted
            dead_letters.flush()
            consumer.commit()
    finally:
        consumer.close()
    record_load(settings, stream_name, read=report.read, inserted=report.inserted,
                dead_letters=report.dead_letters, finished_s=now_ms() / 1000)
    return report

"""The topic/table registry: one place that names each stream and where it lives.

For every stream: its key, partition count and retention on Kafka, its schema subject, its
dead-letter stream, its folder in the local event log and its table in the lake. Partition
counts follow the peak rates in MISSION.md at about 1,000 events/s per partition, rounded up
to leave headroom for replays and paydays (see docs/CAPACITY.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mercury.contracts import schemas
from mercury.contracts.avro_walk import iter_fields


@dataclass(frozen=True)
class Stream:
    name: str
    schema_subject: str
    key: str  # field path of the partition key (``after.user_id`` for CDC: ``before`` on deletes)
    partitions: int
    retention_hours: int
    owner: str
    event_id_field: str | None
    event_time_field: str | None
    dead_letter_stream: str | None
    lake_table: str | None
    compacted: bool = False
    doc: str = ""

    @property
    def folder(self) -> str:
        """Its folder in the local event log (also the Kafka topic name)."""
        return self.name

    @property
    def is_dead_letter(self) -> bool:
        return self.schema_subject == "dead_letter"


def _dlq(of: str, owner: str) -> Stream:
    return Stream(name=f"{of}.dlq", schema_subject="dead_letter", key="dlq_id", partitions=6,
                  retention_hours=24 * 30, owner=owner, event_id_field="dlq_id",
                  event_time_field="failed_at", dead_letter_stream=None,
                  lake_table=f"quality.{of}_dead_letters",
                  doc=f"Records of {of} that failed validation, kept for replay.")


_DECLARED = (
    Stream("transactions", "transaction", key="user_id", partitions=48, retention_hours=24 * 7,
           owner="payments-data", event_id_field="event_id", event_time_field="event_ts",
           dead_letter_stream="transactions.dlq", lake_table="raw.transactions",
           doc="AUTH, SETTLEMENT and REVERSAL events; 25K events/s peak."),
    Stream("user_activity", "user_activity", key="user_id", partitions=96,
           retention_hours=24 * 3, owner="app-data", event_id_field="event_id",
           event_time_field="event_ts", dead_letter_stream="user_activity.dlq",
           lake_table="raw.user_activity", doc="App and assistant events; 80K events/s peak."),
    Stream("risk_signals", "risk_signal", key="user_id", partitions=24, retention_hours=24 * 7,
           owner="risk-data", event_id_field="event_id", event_time_field="event_ts",
           dead_letter_stream="risk_signals.dlq", lake_table="raw.risk_signals",
           doc="Fraud and risk flags; 10K events/s peak."),
    Stream("user_profile_cdc", "user_profile_cdc", key="after.user_id", partitions=12,
           retention_hours=24 * 7, owner="payments-data", event_id_field=None,
           event_time_field=None, dead_letter_stream="user_profile_cdc.dlq",
           lake_table="raw.user_profile_changes", compacted=True,
           doc="Changes of the Postgres table mercury.user_profiles (logical replication)."),
    Stream("knowledge_documents", "knowledge_document_change", key="doc_id", partitions=6,
           retention_hours=24 * 30, owner="assistant-platform", event_id_field="change_id",
           event_time_field="updated_at", dead_letter_stream="knowledge_documents.dlq",
           lake_table="raw.knowledge_document_changes", compacted=True,
           doc="Merchant help pages and card policies: upserts and deletes."),
    Stream("inference_audit", "inference_audit", key="request_id", partitions=24,
           retention_hours=24 * 7, owner="assistant-platform", event_id_field="request_id",
           event_time_field="event_ts", dead_letter_stream="inference_audit.dlq",
           lake_table="audit.inference_requests",
           doc="What the assistant saw per request; compliance queries it in the warehouse."),
    Stream("assistant_safety_outcomes", "assistant_safety_outcome", key="request_id",
           partitions=24, retention_hours=24 * 7, owner="assistant-platform",
           event_id_field="request_id", event_time_field="event_ts",
           dead_letter_stream="assistant_safety_outcomes.dlq", lake_table="audit.safety_outcomes",
           doc="Safety outcome of each answer, reported by the LLM serving tier."),
)

STREAMS: tuple[Stream, ...] = _DECLARED + tuple(
    _dlq(s.name, s.owner) for s in _DECLARED if s.dead_letter_stream)


@cache
def stream(name: str) -> Stream:
    for candidate in STREAMS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no stream {name!r}; known: {', '.join(s.name for s in STREAMS)}")


def check() -> list[str]:
    """Dangling references and clashes in the registry (CI fails on any)."""
    found: list[str] = []
    names = [s.name for s in STREAMS]
    for dup in {n for n in names if names.count(n) > 1}:
        found.append(f"stream {dup!r} declared twice")
    tables = [s.lake_table for s in STREAMS if s.lake_table]
    for dup in {t for t in tables if tables.count(t) > 1}:
        found.append(f"lake table {dup!r} used by two streams")
    known_subjects = schemas.subjects()
    for s in STREAMS:
        if s.schema_subject not in known_subjects:
            found.append(f"{s.name}: schema subject {s.schema_subject!r} does not exist")
            continue
        fields = {path for path, _ in iter_fields(schemas.load(s.schema_subject).schema)}
        for role in ("key", "event_id_field", "event_time_field"):
            value = getattr(s, role)
            if value and value not in fields:
                found.append(f"{s.name}: {role} {value!r} is not a field of {s.schema_subject}")
        if s.dead_letter_stream and s.dead_letter_stream not in names:
            found.append(f"{s.name}: dead-letter stream {s.dead_letter_stream!r} is not declared")
        if s.partitions < 1 or s.retention_hours < 1:
            found.append(f"{s.name}: partitions and retention must be positive")
    return found

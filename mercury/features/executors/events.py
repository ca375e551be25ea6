"""One record of a source stream, as every executor sees it.

The same normalisation runs in the reference executor, the PyFlink job and the Spark job, so
they agree on an event's identity, times and row whatever the stream's envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mercury.contracts import registry
from mercury.features.definition.transforms import apply_derived, unwrap_debezium

if TYPE_CHECKING:
    from mercury.features.definition.dsl import FeatureSet


@dataclass(frozen=True)
class FeatureEvent:
    entity_id: str
    event_id: str
    event_ts: int       # event time, epoch ms
    arrival_ts: int     # when it reached the log (ingest_ts), epoch ms
    order: tuple[Any, ...]  # total order among one entity's events: newer compares greater
    row: dict[str, Any]     # the record's columns plus derived ones
    deleted: bool = False


def normalise(feature_set: FeatureSet, record: dict[str, Any]) -> FeatureEvent | None:
    """The event a valid record of ``feature_set.source`` becomes; None if it has no entity."""
    source = feature_set.source
    if source.envelope == "debezium":
        row, deleted = unwrap_debezium(record)
        meta = record.get("source") or {}
        lsn = meta.get("lsn")
        # The change's time is the row's business time (updated_at), in the same clock as the
        # other streams; a delete has none of its own, so it takes the commit time.
        event_ts = meta.get("ts_ms") if deleted else row.get("updated_at", meta.get("ts_ms"))
        entity_id = row.get(feature_set.entity.join_key)
        if entity_id is None or lsn is None or event_ts is None:
            return None
        return FeatureEvent(
            entity_id=str(entity_id), event_id=f"{lsn}:{entity_id}", event_ts=int(event_ts),
            arrival_ts=int(event_ts), order=(int(lsn),),
            row=apply_derived(source, row), deleted=deleted)
    declared = registry.stream(source.stream)
    entity_id = record.get(feature_set.entity.join_key)
    # A stream declaring no such field (None) finds nothing in the record: no event.
    event_id = record.get(cast(str, declared.event_id_field))
    event_ts = record.get(cast(str, declared.event_time_field))
    if entity_id is None or event_id is None or event_ts is None:
        return None
    return FeatureEvent(
        entity_id=str(entity_id), event_id=str(event_id), event_ts=int(event_ts),
        arrival_ts=int(record.get("ingest_ts") or event_ts), order=(int(event_ts), event_id),
        row=apply_derived(source, record))

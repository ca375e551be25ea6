"""Deletion evidence: what an erasure removed where, with counts and snapshot ids.

Compliance queries it (Iceberg table ``compliance.erasure_evidence``, one row per ticket and
place) to show a regulator that a request was honoured and when. It names the request by its
ticket only: no user id, token or hash, so the evidence itself holds nothing personal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa

if TYPE_CHECKING:
    from datetime import datetime

    from mercury.config import Settings

EVIDENCE_TABLE = "compliance.erasure_evidence"
_TS = pa.timestamp("us", tz="UTC")
EVIDENCE_SCHEMA = pa.schema([
    pa.field("ticket", pa.string(), nullable=False),
    pa.field("requested_at", _TS, nullable=False),
    pa.field("due_at", _TS, nullable=False),
    pa.field("erased_at", _TS, nullable=False),
    pa.field("store", pa.string(), nullable=False),  # redis, lake, event_log, warehouse, ...
    pa.field("location", pa.string(), nullable=False),  # a table, a folder, a key space
    pa.field("removed", pa.int64(), nullable=False),  # rows, keys, lines or key versions
    pa.field("detail_json", pa.string(), nullable=True),  # e.g. the snapshot ids
])


@dataclass(frozen=True)
class Removal:
    """What one store gave up for one request (``removed`` may be 0: the place was checked)."""

    ticket: str
    store: str
    location: str
    removed: int
    detail: dict[str, Any] = field(default_factory=dict)


def rows(requests: dict[str, Any], erased_at: datetime,
         removals: list[Removal]) -> list[dict[str, Any]]:
    """Evidence rows; ``requests``: ticket -> its register entry (for the dates)."""
    return [{"ticket": r.ticket, "requested_at": requests[r.ticket].requested_at,
             "due_at": requests[r.ticket].due_at, "erased_at": erased_at, "store": r.store,
             "location": r.location, "removed": r.removed,
             "detail_json": orjson.dumps(r.detail).decode() if r.detail else None}
            for r in removals]


def record(settings: Settings, evidence_rows: list[dict[str, Any]]) -> None:
    """Appends the rows (a re-run of a ticket that failed half-way adds its own rows, with
    what it still found)."""
    from mercury.lake.tables import catalog

    if not evidence_rows:
        return
    lake = catalog(settings)
    lake.create_namespace_if_not_exists("compliance")
    table = lake.create_table_if_not_exists(EVIDENCE_TABLE, EVIDENCE_SCHEMA)
    table.append(pa.Table.from_pylist(evidence_rows, schema=EVIDENCE_SCHEMA))


def read(settings: Settings, ticket: str | None = None) -> list[dict[str, Any]]:
    from pyiceberg.expressions import AlwaysTrue

    from mercury.lake.predicates import EqualTo
    from mercury.lake.tables import catalog

    lake = catalog(settings)
    if not lake.table_exists(EVIDENCE_TABLE):
        return []
    table = lake.load_table(EVIDENCE_TABLE)
    found = table.scan(row_filter=EqualTo("ticket", ticket) if ticket else AlwaysTrue())
    return found.to_arrow().to_pylist()

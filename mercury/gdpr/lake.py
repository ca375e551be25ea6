"""Erasure in the Iceberg lake: row-level deletes, then the bytes themselves.

A delete in Iceberg only writes a new snapshot; the old data files (and the manifests whose
column bounds quote values) stay readable by time travel. So, per table:

1. delete the subjects' rows: by id columns (``user_id``, ``entity_id``, ``user_token``,
   ``key/before/after.user_id``) and, in columns that keep a whole payload (dead letters, late
   events), by the id found inside it (JSON or Avro), through the row's key;
2. expire every snapshot but the current one: erasure cannot keep time travel to before it;
3. remove every data, delete and manifest file that no retained snapshot references and that
   is older than the erasure's start (a concurrent writer's files, not yet committed, are
   newer: they stay).

Tables are scanned once per batch of subjects, which is why the DAG erases in daily batches.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mercury.gdpr.evidence import EVIDENCE_TABLE, Removal
from mercury.gdpr.subject import Subject

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

    from mercury.config import Settings

ID_COLUMNS = ("user_id", "entity_id", "user_token", "key.user_id", "after.user_id",
              "before.user_id")  # key.user_id: a CDC delete (contract v2) carries only that
PAYLOAD_COLUMNS = ("raw_payload", "payload", "raw_payload_base64")
ROW_KEYS = ("dlq_id", "event_id", "request_id", "change_id")
_DATA_SUFFIXES = (".parquet", ".avro", ".orc", ".puffin")  # never *.metadata.json: no rows


def erase_lake(settings: Settings, subjects: list[Subject], started: datetime) -> list[Removal]:
    from mercury.lake.tables import catalog

    lake = catalog(settings)
    removals = []
    for namespace in lake.list_namespaces():
        for identifier in lake.list_tables(namespace):
            name = ".".join(identifier)
            if name != EVIDENCE_TABLE:
                removals += erase_table(lake.load_table(identifier), name, subjects, started)
    return removals


def erase_table(table: Table, name: str, subjects: list[Subject],
                started: datetime) -> list[Removal]:
    """The subjects' rows out of one table and its files: one removal per subject (none if
    the table holds no user column). One scan finds the rows of the whole batch."""
    found = _Found.of(table, subjects)
    if found is None:
        return []
    if found.match is not None:
        table.delete(found.match)
        table = table.refresh()
    expired = _expire_history(table)
    removed_files = _remove_unreferenced(table.refresh(), started)
    current = table.current_snapshot()
    detail = {"snapshot_id": current.snapshot_id if current else None,
              "expired_snapshots": expired, "removed_files": removed_files}
    return [Removal(who.ticket, "lake", name, found.rows[who.ticket], detail)
            for who in subjects]


def subject_rows(table: Table, subjects: list[Subject]) -> BooleanExpression | None:
    """The filter of the subjects' rows in ``table``; None if it holds none of them, or no
    user column (shared with the access export, ``mercury.gdpr.access``)."""
    found = _Found.of(table, subjects)
    return found.match if found else None


class _Found:
    """The batch's rows in a table: how many per ticket, and the filter that selects them."""

    def __init__(self, rows: Counter[str], match: BooleanExpression | None) -> None:
        self.rows = rows
        self.match = match

    @classmethod
    def of(cls, table: Table, subjects: list[Subject]) -> _Found | None:
        from mercury.lake.predicates import In

        schema = table.schema()
        present = [c for c in ID_COLUMNS if _has(schema, c)]
        payloads = [c for c in PAYLOAD_COLUMNS if _has(schema, c)]
        if not present and not payloads:
            return None
        rows: Counter[str] = Counter()
        if table.current_snapshot() is None:
            return cls(rows, None)
        owner = {value: s.ticket for s in subjects for value in s.ids}
        terms: list[BooleanExpression] = []
        if present:
            by_id = _any([In(c, sorted(owner)) for c in present])
            for row in table.scan(row_filter=by_id, selected_fields=tuple(present)).to_arrow(
                    ).to_pylist():
                rows[next(owner[v] for c in present if (v := _get(row, c)) in owner)] += 1
            if rows:
                terms.append(by_id)
        if payloads:
            key = next((k for k in ROW_KEYS if _has(schema, k)), None)
            if key is None:
                raise ValueError(f"{'.'.join(table.name())} keeps payloads but has none of the "
                                 f"row keys {ROW_KEYS}: its rows cannot be deleted one by one")
            quoting = _rows_quoting(table, key, payloads, subjects)
            rows.update(quoting.values())
            if quoting:
                terms.append(In(key, sorted(quoting)))
        return cls(rows, _any(terms) if terms else None)


def _any(terms: list[BooleanExpression]) -> BooleanExpression:
    from pyiceberg.expressions import Or

    found = terms[0]
    for term in terms[1:]:
        found = Or(found, term)
    return found


def _get(row: dict[str, Any], column: str) -> Any:
    value: Any = row
    for part in column.split("."):  # after.user_id: a field of a struct column
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _rows_quoting(table: Table, key: str, columns: list[str],
                  subjects: list[Subject]) -> dict[Any, str]:
    """Row key -> ticket of the rows whose payload holds a subject (a full scan of these
    columns: payload tables are the small ones, dead letters and late events)."""
    needles = [(s.ticket, [*s.json_needles(), *s.avro_needles()]) for s in subjects]
    found: dict[Any, str] = {}
    for batch in table.scan(selected_fields=(key, *columns)).to_arrow_batch_reader():
        data = batch.to_pydict()
        for i, row_key in enumerate(data[key]):
            blobs = _payload_bytes(data, columns, i)
            for ticket, mine in needles:
                if any(n in blob for blob in blobs for n in mine):
                    found[row_key] = ticket
                    break
    return found


def _payload_bytes(data: dict[str, list], columns: Iterable[str], i: int) -> list[bytes]:
    out = []
    for column in columns:
        value = data[column][i]
        if value is None:
            continue
        if column.endswith("_base64"):
            out.append(base64.b64decode(value))
        else:
            out.append(value.encode() if isinstance(value, str) else bytes(value))
    return out


def _has(schema, column: str) -> bool:
    try:
        schema.find_field(column)
    except ValueError:
        return False
    return True


def _expire_history(table: Table) -> int:
    current = table.current_snapshot()
    old = [s.snapshot_id for s in table.snapshots()
           if current is None or s.snapshot_id != current.snapshot_id]
    if old:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    return len(old)


def _remove_unreferenced(table: Table, started: datetime) -> int:
    from pyarrow import fs

    referenced = _referenced_files(table)
    filesystem, root = fs.FileSystem.from_uri(table.location())
    removed = 0
    for info in filesystem.get_file_info(fs.FileSelector(root, recursive=True,
                                                          allow_not_found=True)):
        if info.type != fs.FileType.File or not info.path.endswith(_DATA_SUFFIXES):
            continue
        if info.path in referenced or info.mtime is None or info.mtime >= started:
            continue
        filesystem.delete_file(info.path)
        removed += 1
    return removed


def _referenced_files(table: Table) -> set[str]:
    from pyarrow import fs

    def path(uri: str) -> str:
        return fs.FileSystem.from_uri(uri)[1]

    found: set[str] = set()
    for snapshot in table.snapshots():
        found.add(path(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            found.add(path(manifest.manifest_path))
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                found.add(path(entry.data_file.file_path))
    return found


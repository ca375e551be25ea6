"""Erasure in the Iceberg lake: row-level deletes, then the bytes themselves.

A delete in Iceberg only writes a new snapshot; the old data files (and the manifests whose
column bounds quote values) stay readable by time travel. So, per table:

1. delete the subjects' rows: by id columns (``user_id``, ``entity_id``, ``user_token``,
   ``before/after.user_id``) and, in columns that keep a whole payload (dead letters, late
   events), by the id found inside it (JSON or Avro), through the row's key;
2. expire every snapshot but the current one: erasure cannot keep time travel to before it;
3. remove every data, delete and manifest file that no retained snapshot references and that
   is older than the erasure's start (a concurrent writer's files, not yet committed, are
   newer: they stay).

Tables are scanned once per batch of subjects, which is why the DAG erases in daily batches.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mercury.privacy.erasure.evidence import EVIDENCE_TABLE, Removal
from mercury.privacy.erasure.subject import Subject

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

    from mercury.config import Settings

ID_COLUMNS = ("user_id", "entity_id", "user_token", "after.user_id", "before.user_id")
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
            if name == EVIDENCE_TABLE:
                continue
            removal = erase_table(lake.load_table(identifier), name, subjects, started)
            if removal is not None:
                removals.append(removal)
    return removals


def erase_table(table: Table, name: str, subjects: list[Subject],
                started: datetime) -> Removal | None:
    """The subjects' rows out of one table and its files; None if it holds no user column."""
    match = subject_rows(table, subjects)
    if match is None:
        return None
    doomed = table.scan(row_filter=match).count() if table.current_snapshot() else 0
    if doomed:
        table.delete(match)
        table = table.refresh()
    expired = _expire_history(table)
    removed_files = _remove_unreferenced(table.refresh(), started)
    current = table.current_snapshot()
    return Removal("lake", name, doomed, {
        "snapshot_id": current.snapshot_id if current else None,
        "expired_snapshots": expired, "removed_files": removed_files})


def subject_rows(table: Table, subjects: list[Subject]) -> BooleanExpression | None:
    """The filter of the subjects' rows in ``table``; None if it holds no user column
    (shared with the access export, ``mercury.privacy.access``)."""
    from pyiceberg.expressions import Or

    from mercury.lake.predicates import In

    schema = table.schema()
    present = [c for c in ID_COLUMNS if _has(schema, c)]
    payloads = [c for c in PAYLOAD_COLUMNS if _has(schema, c)]
    if not present and not payloads:
        return None
    ids = sorted({value for s in subjects for value in s.ids})
    terms: list[BooleanExpression] = [In(column, ids) for column in present]
    if payloads:
        key = next((k for k in ROW_KEYS if _has(schema, k)), None)
        if key is None:
            raise ValueError(f"{'.'.join(table.name())} keeps payloads but has none of the row "
                             f"keys {ROW_KEYS}: its rows cannot be deleted one by one")
        keys = _rows_quoting(table, key, payloads, subjects)
        if keys:
            terms.append(In(key, keys))
    if not terms:
        return None
    expression = terms[0]
    for term in terms[1:]:
        expression = Or(expression, term)
    return expression


def _rows_quoting(table: Table, key: str, columns: list[str],
                  subjects: list[Subject]) -> list[Any]:
    """Keys of rows whose payload holds a subject (a full scan of these columns: payload
    tables are the small ones, dead letters and late events)."""
    if table.current_snapshot() is None:
        return []
    json_needles = [n for s in subjects for n in s.json_needles()]
    avro_needles = [n for s in subjects for n in s.avro_needles()]
    found: list[Any] = []
    for batch in table.scan(selected_fields=(key, *columns)).to_arrow_batch_reader():
        data = batch.to_pydict()
        for i, row_key in enumerate(data[key]):
            blobs = _payload_bytes(data, columns, i)
            if any(n in blob for blob in blobs for n in (*json_needles, *avro_needles)):
                found.append(row_key)
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


"""Compaction: the streaming job's staged part files -> Iceberg, safe to repeat.

Design notes: docs/STREAMING.md, "Compaction of staged files into the lake".
"""

from __future__ import annotations

import filecmp
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import orjson
import pyarrow as pa

from mercury.contracts import registry
from mercury.lake import tables
from mercury.privacy.tombstones import Tombstones, record_user

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

    from mercury.config import Settings

STAGING_DIR = "lake_staging"  # under settings.data_dir, as written by flink_jobs.online_features
VALIDATED = "validated"
LATE = "late"
DONE_DIR = "_compacted"
BATCH_RECORDS = 100_000
LATE_EVENTS_TABLE = "quality.late_events"


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


_TS = pa.timestamp("ms", tz="UTC")
LATE_EVENTS_SCHEMA = pa.schema([
    pa.field("stream", pa.string(), nullable=False, metadata=_doc("Registry stream.")),
    pa.field("event_id", pa.string(), nullable=False,
             metadata=_doc("The stream's event id; '<source.lsn>:<user_id>' for profile CDC.")),
    pa.field("event_ts", _TS, nullable=False,
             metadata=_doc("Event time the streaming job routed the event by.")),
    pa.field("watermark", _TS, nullable=False,
             metadata=_doc("The job's event-time watermark when the event arrived.")),
    pa.field("ingest_ts", _TS, nullable=True,
             metadata=_doc("When the event reached the stream, where its record says.")),
    pa.field("position", pa.string(), nullable=False,
             metadata=_doc("Source position: <stream>/<file>:<line>.")),
    pa.field("payload", pa.string(), nullable=False,
             metadata=_doc("The validated record as JSON, every field it had.")),
])


class CompactError(ValueError):
    """A staged file cannot be compacted; the message names the file and line."""


@dataclass
class Counts:
    read: int = 0  # lines staged
    inserted: int = 0  # identities the table did not have
    already_stored: int = 0  # identities it had: re-compaction, duplicates across batches
    replaced: int = 0  # of those, rows replaced by a copy that reached the stream earlier
    collapsed: int = 0  # duplicates within a batch (and one late event routed to 2 entities)
    with_unknown_fields: int = 0  # records with fields beyond the contract (dropped)

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class CompactResult:
    files: int = 0  # part files committed and moved to _compacted/
    validated: dict[str, Counts] = field(default_factory=dict)  # per stream
    late: dict[str, Counts] = field(default_factory=dict)  # per stream
    unknown_fields: Counter = field(default_factory=Counter)  # "<stream>.<path>" -> records
    unkeyed: Counter = field(default_factory=Counter)  # stream -> records that have no key
    held_files: list[str] = field(default_factory=list)  # left in staging (unkeyed records)
    erased: int = 0  # lines of erased users, dropped

    def counts(self, kind: str, stream: str) -> Counts:
        return (self.validated if kind == VALIDATED else self.late).setdefault(stream, Counts())

    def add(self, other: CompactResult) -> None:
        self.files += other.files
        self.erased += other.erased
        for kind in (VALIDATED, LATE):
            for stream, counts in getattr(other, kind).items():
                self.counts(kind, stream).add(counts)
        self.unknown_fields.update(other.unknown_fields)
        self.unkeyed.update(other.unkeyed)
        self.held_files.extend(f for f in other.held_files if f not in self.held_files)

    def line(self) -> str:
        """One line: files, then lines read and rows inserted per kind of staged file."""
        parts = [f"{self.files} file(s)"]
        for kind in (VALIDATED, LATE):
            if not getattr(self, kind):
                continue
            total = Counts()
            for counts in getattr(self, kind).values():
                total.add(counts)
            parts.append(f"{kind} {total.read:,} read, {total.inserted:,} new")
        if self.held_files:
            parts.append(f"{len(self.held_files)} held")
        if self.erased:
            parts.append(f"{self.erased:,} of erased users dropped")
        return "; ".join(parts)

    def summary(self) -> list[str]:
        lines = [f"compacted {self.line()}"]
        for kind, target in ((VALIDATED, _lake_table), (LATE, lambda _: LATE_EVENTS_TABLE)):
            for stream, c in sorted(getattr(self, kind).items()):
                extra = f", {c.with_unknown_fields:,} with unknown fields (dropped)" \
                    if c.with_unknown_fields else ""
                lines.append(
                    f"  {kind:<9} {stream} -> {target(stream)}: read {c.read:,}, new "
                    f"{c.inserted:,}, already stored {c.already_stored:,}, replaced by an "
                    f"earlier copy {c.replaced:,}, duplicates in batch {c.collapsed:,}{extra}")
        if self.unknown_fields:
            top = ", ".join(f"{name} {n:,}" for name, n in self.unknown_fields.most_common(5))
            lines.append(f"  unknown fields: {top}")
        for stream, n in sorted(self.unkeyed.items()):
            lines.append(f"  {n:,} record(s) of {stream} have no key: their files stay staged")
        lines.extend(f"  held: {path}" for path in self.held_files)
        return lines


def _lake_table(stream: str) -> str:
    spec = _lake_stream(stream)
    # ``_lake_stream`` returns only streams that have a lake table.
    return cast(str, spec.lake_table) if spec else "(none)"


# --- the staging area -------------------------------------------------------------------------


def staging_dir(settings: Settings) -> Path:
    return settings.data_dir / STAGING_DIR


def committed_files(folder: Path) -> list[Path]:
    """Committed part files of a staging folder, oldest first (hidden and ``_`` names are not
    committed files: in-progress, pending, or already compacted)."""
    if not folder.is_dir():
        return []
    found = [(entry.stat().st_mtime_ns, entry.name, Path(entry.path))
             for entry in os.scandir(folder)
             if entry.is_file() and not entry.name.startswith((".", "_"))]
    return [path for _, _, path in sorted(found)]


@dataclass(frozen=True)
class _Line:
    path: Path
    number: int
    entry: dict


_ENVELOPE: dict[str, dict[str, type]] = {
    VALIDATED: {"stream": str, "position": str, "record": dict},
    LATE: {"stream": str, "position": str, "record": dict, "watermark": int, "event_ts": int}}


def _read(path: Path, kind: str) -> list[_Line]:
    lines = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise CompactError(f"{path}:{number}: not JSON ({exc})") from exc
            if not isinstance(entry, dict):
                raise CompactError(f"{path}:{number}: expected a JSON object")
            for name, kind_type in _ENVELOPE[kind].items():
                value = entry.get(name)
                if not isinstance(value, kind_type) or isinstance(value, bool):
                    raise CompactError(f"{path}:{number}: a {kind} line needs {name!r} "
                                       f"({kind_type.__name__}), got {value!r:.60}")
            lines.append(_Line(path, number, entry))
    return lines


def _batches(files: list[Path], kind: str, batch_records: int) -> Iterator[list[_Line]]:
    """Whole files, grouped until a batch holds at least ``batch_records`` lines."""
    batch: list[_Line] = []
    for path in files:
        try:
            batch.extend(_read(path, kind))
        except FileNotFoundError:
            continue  # a racing compactor committed and moved it since it was listed
        if len(batch) >= batch_records:
            yield batch
            batch = []
    if batch:
        yield batch


def _keep_lines(path: Path, numbers: list[int]) -> None:
    """Rewrites a staged file with only the given lines (1-based), before it is archived."""
    wanted = set(numbers)
    with open(path, "rb") as f:
        kept = [raw for number, raw in enumerate(f, start=1) if number in wanted]
    hidden = path.with_name(f".{path.name}.erasing")
    hidden.write_bytes(b"".join(kept))
    os.replace(hidden, path)


def _archive(path: Path) -> None:
    """Move a compacted file into ``_compacted/``; a file compacted before (copied back, or
    moved by a racing compactor) is not kept twice."""
    done = path.parent / DONE_DIR
    done.mkdir(exist_ok=True)
    target = done / path.name
    try:
        if target.exists():
            if filecmp.cmp(path, target, shallow=False):
                path.unlink()
                return
            k = 1
            while (target := done / f"{path.name}.{k}").exists():
                k += 1
        os.rename(path, target)
    except FileNotFoundError:
        pass  # another compactor moved it after committing the same records


# --- identities -------------------------------------------------------------------------------


def _cdc_change_id(record: dict) -> str | None:
    """``<source.lsn>:<user_id>`` of a profile change (user id from ``after``, else ``key``,
    else ``before`` (v1 deletes)); works on a staged record and on the same columns read back
    from the table."""
    row = record.get("after") or record.get("key") or record.get("before") or {}
    lsn = (record.get("source") or {}).get("lsn")
    user_id = row.get("user_id")
    return None if lsn is None or user_id is None else f"{lsn}:{user_id}"


@dataclass(frozen=True)
class DerivedId:
    """How to key the records of a stream whose contract has no event id field."""

    of: Callable[[dict], str | None]  # the id of a record (or of a row of ``fields``)
    fields: tuple[str, ...]  # the table columns the id is computed from
    probe: Callable[[list[dict]], BooleanExpression]  # covers the stored copies of records


def _cdc_probe(records: list[dict]) -> BooleanExpression:
    from mercury.lake.predicates import In

    return In("source.lsn", sorted({r["source"]["lsn"] for r in records}))


DERIVED_IDS: dict[str, DerivedId] = {
    "user_profile_cdc": DerivedId(_cdc_change_id,
                                  ("source.lsn", "after.user_id", "key.user_id",
                                   "before.user_id"), _cdc_probe),
}


def event_id(stream: str, record: dict) -> str | None:
    """The identity of a record of ``stream`` in the lake; None if it cannot be keyed."""
    try:
        spec = registry.stream(stream)
    except KeyError:
        return None
    if spec.event_id_field:
        value = record.get(spec.event_id_field)
        return None if value is None else str(value)
    derived = DERIVED_IDS.get(stream)
    return derived.of(record) if derived else None


def _lake_stream(stream: str) -> registry.Stream | None:
    try:
        spec = registry.stream(stream)
    except KeyError:
        return None
    if spec.lake_table and (spec.event_id_field or stream in DERIVED_IDS):
        return spec
    return None


# --- compaction -------------------------------------------------------------------------------


def compact(settings: Settings, progress: Callable[[CompactResult], None] | None = None,
            batch_records: int = BATCH_RECORDS) -> CompactResult:
    """Commit every committed part file of the staging area to Iceberg, then move it to
    ``_compacted/``. ``progress`` gets each batch's result once its files are moved."""
    if batch_records < 1:
        raise ValueError("batch_records must be at least 1")
    result = CompactResult()
    root = staging_dir(settings)
    tombstones = Tombstones.of(settings)
    for kind, commit in ((VALIDATED, _commit_validated), (LATE, _commit_late)):
        for staged in _batches(committed_files(root / kind), kind, batch_records):
            done = CompactResult()
            batch = [line for line in staged
                     if not tombstones.erased(record_user(line.entry["record"]))]
            # Lines of erased users: neither committed nor archived (late data must not
            # bring an erased user back, mercury.privacy.tombstones).
            done.erased = len(staged) - len(batch)
            held = commit(settings, batch, done)
            for path in dict.fromkeys(line.path for line in staged):
                if path in held:
                    done.held_files.append(str(path))
                else:
                    if done.erased:
                        _keep_lines(path, [line.number for line in batch if line.path == path])
                    _archive(path)
                    done.files += 1
            result.add(done)
            if progress:
                progress(done)
    return result


def _keyable(lines: list[_Line], kind: str, result: CompactResult) -> tuple[
        dict[str, list[_Line]], set[Path]]:
    """Lines grouped by stream; lines that cannot be keyed (or, validated, have no lake table
    to go to) are counted and hold their file."""
    by_stream: dict[str, list[_Line]] = {}
    held: set[Path] = set()
    for line in lines:
        stream = line.entry["stream"]
        result.counts(kind, stream).read += 1
        no_table = kind == VALIDATED and _lake_stream(stream) is None
        if no_table or event_id(stream, line.entry["record"]) is None:
            result.unkeyed[stream] += 1
            held.add(line.path)
            continue
        by_stream.setdefault(stream, []).append(line)
    return by_stream, held


def _commit_validated(settings: Settings, lines: list[_Line], result: CompactResult) -> set[Path]:
    by_stream, held = _keyable(lines, VALIDATED, result)
    for stream, group in by_stream.items():
        spec = registry.stream(stream)
        counts = result.counts(VALIDATED, stream)
        columns = tables.arrow_schema(spec.schema_subject)
        records = [line.entry["record"] for line in group]
        for record in records:
            extra = unknown_fields(record, columns)
            if extra:
                counts.with_unknown_fields += 1
                result.unknown_fields.update(list(dict.fromkeys(f"{stream}.{n}" for n in extra)))
        try:
            if spec.event_id_field:
                done = tables.upsert(settings, stream, records)
                counts.inserted += done.inserted
                counts.already_stored += done.updated_or_unchanged
                counts.replaced += done.replaced
                counts.collapsed += done.collapsed
            else:
                derived = DERIVED_IDS[stream]
                rows = tables.records_to_arrow(spec.schema_subject, records)
                target = tables.ensure_table(settings, stream)
                outcomes = _insert_absent(
                    settings, target, rows, [derived.of(r) for r in records],
                    derived.probe(records), derived.fields, derived.of)
                for outcome, n in Counter(outcomes).items():
                    setattr(counts, outcome, getattr(counts, outcome) + n)
        except tables.LakeWriteError as exc:
            files = sorted({str(line.path) for line in group})
            raise CompactError(f"{stream} records in {', '.join(files)}: {exc}") from exc
    return held


def _commit_late(settings: Settings, lines: list[_Line], result: CompactResult) -> set[Path]:
    by_stream, held = _keyable(lines, LATE, result)
    keyed = [(stream, line) for stream, group in by_stream.items() for line in group]
    if not keyed:
        return held
    # Of several copies of one late event, keep the one that reached the stream first.
    keyed.sort(key=lambda item: _arrival_order(item[1].entry["record"]))
    rows, keys = [], []
    for stream, line in keyed:
        entry = line.entry
        record = entry["record"]
        key = event_id(stream, record)
        keys.append((stream, key))
        rows.append({"stream": stream, "event_id": key, "event_ts": entry["event_ts"],
                     "watermark": entry["watermark"], "ingest_ts": _arrival(record),
                     "position": entry["position"],
                     "payload": orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()})
    try:
        batch = pa.Table.from_pylist(rows, schema=LATE_EVENTS_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        files = sorted({str(line.path) for _, line in keyed})
        raise CompactError(f"late events in {', '.join(files)}: {exc}") from exc
    target = ensure_late_events_table(settings)
    # A copy of an event repeats its event time: its stored twin is in the same days.
    outcomes = _insert_absent(settings, target, batch, keys, _late_probe(batch),
                              ("stream", "event_id"), lambda row: (row["stream"], row["event_id"]))
    for (stream, _), outcome in zip(keys, outcomes, strict=True):
        counts = result.counts(LATE, stream)
        setattr(counts, outcome, getattr(counts, outcome) + 1)
    return held


def _arrival_order(record: dict) -> tuple[bool, int]:
    arrival = _arrival(record)
    return (arrival is None, arrival or 0)


def _arrival(record: dict) -> int | None:
    value = record.get(tables.ARRIVAL_FIELD)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _late_probe(batch: pa.Table) -> BooleanExpression:
    import pyarrow.compute as pc
    from pyiceberg.expressions import And

    from mercury.lake.predicates import GreaterThanOrEqual, In, LessThanOrEqual

    bounds = pc.min_max(batch["event_ts"])
    days = And(GreaterThanOrEqual("event_ts", bounds["min"].as_py().isoformat()),
               LessThanOrEqual("event_ts", bounds["max"].as_py().isoformat()))
    return And(days, And(In("stream", sorted(set(batch["stream"].to_pylist()))),
                         In("event_id", sorted(set(batch["event_id"].to_pylist())))))


# --- writing ----------------------------------------------------------------------------------


def _insert_absent(settings: Settings, table: Table, rows: pa.Table, keys: list,
                   probe: BooleanExpression, fields: tuple[str, ...],
                   key_of: Callable[[dict], object]) -> list[str]:
    """Append the rows whose key the table lacks, in one commit; a stored key is never
    rewritten. Of several rows with one key, the first is kept. Returns, per row, the
    ``Counts`` field it adds to: ``inserted``, ``already_stored`` or ``collapsed``.

    ``probe`` must select every stored row that can share a key with ``rows``; ``key_of``
    computes a key from a stored row's ``fields`` (read back as nested dicts).
    """
    from pyiceberg.exceptions import CommitFailedException

    first: dict = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    for attempt in range(1, tables.COMMIT_ATTEMPTS + 1):
        stored = _stored_keys(table, probe, fields, key_of)
        new = [i for key, i in first.items() if key not in stored]
        if not new:
            break
        try:
            with table.transaction() as tx:
                tx.append(tables._to_table_layout(rows.take(pa.array(sorted(new))), table))
            break
        except CommitFailedException:
            if attempt == tables.COMMIT_ATTEMPTS:
                raise
            table = tables.catalog(settings).load_table(table.name())  # someone committed first
    outcomes = ["collapsed"] * len(keys)
    for key, i in first.items():
        outcomes[i] = "already_stored" if key in stored else "inserted"
    return outcomes


def _stored_keys(table: Table, probe: BooleanExpression, fields: tuple[str, ...],
                 key_of: Callable[[dict], object]) -> set:
    if table.current_snapshot() is None:
        return set()
    found = table.scan(row_filter=probe, selected_fields=fields).to_arrow()
    return {key_of(row) for row in found.to_pylist()}


def ensure_late_events_table(settings: Settings) -> Table:
    """``quality.late_events``, created if missing (partitioned by day of event time) and
    given any column ``LATE_EVENTS_SCHEMA`` added since."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.transforms import DayTransform

    cat = tables.catalog(settings)
    try:
        table = cat.load_table(LATE_EVENTS_TABLE)
    except NoSuchTableError:
        properties = {"mercury.key": "stream,event_id", "mercury.writer": __name__}
        return tables.create_table(cat, LATE_EVENTS_TABLE, LATE_EVENTS_SCHEMA, properties,
                                   ("event_ts", DayTransform(), "event_ts_day"))
    present = {f.name for f in table.schema().fields}
    if any(name not in present for name in LATE_EVENTS_SCHEMA.names):
        with table.update_schema() as update:
            update.union_by_name(LATE_EVENTS_SCHEMA)
        table = cat.load_table(LATE_EVENTS_TABLE)
    return table


def read_late_events(settings: Settings) -> pa.Table:
    """The current snapshot of ``quality.late_events`` as Arrow."""
    return tables.catalog(settings).load_table(LATE_EVENTS_TABLE).scan().to_arrow()


# --- unknown fields ---------------------------------------------------------------------------


def unknown_fields(record: dict, columns: pa.Schema) -> list[str]:
    """Paths of the record's fields that the columns do not have (``a.b`` inside a struct,
    ``a[].b`` inside a list, ``a{}.b`` inside a map's values); the table drops them."""
    return _unknown(record, pa.struct(list(columns)), "")


def _unknown(value, dtype: pa.DataType, path: str) -> list[str]:
    if pa.types.is_struct(dtype) and isinstance(value, dict):
        children = {dtype.field(i).name: dtype.field(i).type for i in range(dtype.num_fields)}
        found = [f"{path}{name}" for name in value if name not in children]
        for name, child in children.items():
            if value.get(name) is not None:
                found.extend(_unknown(value[name], child, f"{path}{name}."))
        return found
    if pa.types.is_list(dtype) and isinstance(value, list):
        return [name for item in value
                for name in _unknown(item, dtype.value_type, f"{path[:-1]}[].")]
    if pa.types.is_map(dtype) and isinstance(value, dict):
        return [name for item in value.values()
                for name in _unknown(item, dtype.item_type, f"{path[:-1]}{{}}.")]
    return []

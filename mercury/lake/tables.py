"""Iceberg tables of the lake: one per stream, columns from the contract, written by event id.

The catalog comes from config: a pyiceberg SqlCatalog (sqlite file in the warehouse folder)
locally, AWS Glue over S3 in production; the code path is the same. A table's columns are the
latest version of its stream's Avro contract (``arrow_schema``). Keys a record carries beyond
them (fields added by a producer before the contract knows them) are dropped here rather than
stored untyped; the raw event log keeps them.

Writes can be repeated (house rule 4): ``upsert`` keeps one row per event id, the copy that
reached the stream first (smallest ``ingest_ts``, the earliest in the call on a tie). Replaying
the same records changes nothing, and the final table does not depend on the order in which
batches arrive. Looking up stored ids reads only the partitions (days of event time) that the
batch touches: a retried event repeats its event time, so its earlier copy lives there too.

pyiceberg is imported inside the functions: ``import mercury.lake.tables`` stays cheap, and
the module imports (without being usable) where pyiceberg is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pyarrow as pa
import pyarrow.compute as pc

from mercury.contracts import registry, schemas
from mercury.contracts.avro_walk import named_types, resolve

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

    from mercury.config import Settings

# The field that says when a copy of an event reached the stream; the earliest copy wins.
ARRIVAL_FIELD = "ingest_ts"
COMMIT_ATTEMPTS = 4

_PRIMITIVES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}

# (underlying Avro type, logicalType) -> Arrow type. A logical type missing here is an error,
# not a silent fall-back to the underlying type.
_LOGICAL: dict[tuple[str, str], pa.DataType] = {
    ("long", "timestamp-millis"): pa.timestamp("ms", tz="UTC"),
    ("long", "timestamp-micros"): pa.timestamp("us", tz="UTC"),
    ("long", "local-timestamp-millis"): pa.timestamp("ms"),
    ("long", "local-timestamp-micros"): pa.timestamp("us"),
    ("int", "date"): pa.date32(),
    ("string", "uuid"): pa.string(),
}


class UnmappedAvroType(TypeError):
    """A contract uses an Avro type the lake has no column type for; add a mapping first."""


class LakeWriteError(ValueError):
    """Records cannot be written to a lake table; the message names the field."""


@dataclass(frozen=True)
class UpsertResult:
    inserted: int  # event ids the table did not have
    updated_or_unchanged: int  # event ids it had (see ``replaced``)
    replaced: int = 0  # of those, rows replaced by a copy that arrived earlier
    collapsed: int = 0  # duplicates of an event id within the call, dropped before writing


# --- schema -------------------------------------------------------------------------------


@cache
def arrow_schema(subject: str, version: int | None = None) -> pa.Schema:
    """The Arrow schema of a contract (its latest version by default), one column per field.

    Timestamps become ``timestamp[ms, UTC]``, enums strings, ``["null", X]`` a nullable X,
    records structs, arrays lists and maps ``map<string, V>``. Field docs, data classes and
    formats travel as field metadata (pyiceberg turns ``doc`` into the column's doc).
    """
    contract = schemas.load(subject, version)
    schema = avro_to_arrow(contract.schema, where=subject)
    return schema.with_metadata({"avro_subject": subject, "avro_version": str(contract.version)})


def avro_to_arrow(root: dict, where: str | None = None) -> pa.Schema:
    """The Arrow schema of an Avro record schema; raises UnmappedAvroType naming the field
    whose type has no mapping (nothing is skipped)."""
    if root.get("type") != "record":
        raise UnmappedAvroType(f"{where or 'schema'}: a table schema must be an Avro record")
    names = named_types(root)
    where = where or root["name"]
    return pa.schema([_arrow_field(f, names, (root["name"],), where) for f in root["fields"]])


def _arrow_field(field: dict, names: dict, stack: tuple[str, ...], path: str) -> pa.Field:
    where = f"{path}.{field['name']}"
    dtype, nullable = _arrow_type(field["type"], names, stack, where)
    metadata = {key: str(field[key]) for key in ("doc", "data_class", "format") if key in field}
    return pa.field(field["name"], dtype, nullable=nullable, metadata=metadata or None)


def _arrow_type(node, names: dict, stack: tuple[str, ...], where: str) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of an Avro type node."""
    try:
        node = resolve(node, names)
    except KeyError as exc:
        raise UnmappedAvroType(f"{where}: unknown named type {node!r}") from exc
    if isinstance(node, list):
        branches = [b for b in node if resolve(b, names) != "null"]
        if len(branches) != 1:
            raise UnmappedAvroType(
                f"{where}: union {node!r} has {len(branches)} non-null branches; only "
                "[\"null\", X] maps to a column")
        dtype, _ = _arrow_type(branches[0], names, stack, where)
        return dtype, len(branches) < len(node)
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node], False
        raise UnmappedAvroType(f"{where}: Avro type {node!r} has no column type")
    kind = node.get("type")
    logical = node.get("logicalType")
    if logical is not None:
        if (kind, logical) in _LOGICAL:
            return _LOGICAL[(kind, logical)], False
        raise UnmappedAvroType(f"{where}: logical type {logical!r} on {kind!r} is not mapped")
    if kind == "enum":
        return pa.string(), False
    if kind == "fixed":
        return pa.binary(int(node["size"])), False
    if kind == "array":
        item, item_nullable = _arrow_type(node["items"], names, stack, f"{where}[]")
        return pa.list_(pa.field("element", item, nullable=item_nullable)), False
    if kind == "map":
        value, value_nullable = _arrow_type(node["values"], names, stack, f"{where}{{}}")
        return pa.map_(pa.field("key", pa.string(), nullable=False),
                       pa.field("value", value, nullable=value_nullable)), False
    if kind == "record":
        if node["name"] in stack:
            raise UnmappedAvroType(f"{where}: recursive record {node['name']!r}")
        inner = stack + (node["name"],)
        return pa.struct([_arrow_field(f, names, inner, where) for f in node["fields"]]), False
    raise UnmappedAvroType(f"{where}: Avro type {node!r} has no column type")


def records_to_arrow(subject: str, records: list[dict]) -> pa.Table:
    """Validated records as an Arrow table of the contract's columns; other keys are dropped.

    Timestamps are epoch milliseconds (Avro ``timestamp-millis``), as on the stream.
    """
    schema = arrow_schema(subject)
    try:
        table = pa.Table.from_pylist(records, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise LakeWriteError(f"records do not fit the {subject} contract: {exc}") from exc
    for field, column in zip(schema, table.columns, strict=True):
        if not field.nullable and column.null_count:
            raise LakeWriteError(
                f"{subject}.{field.name} is required but {column.null_count} record(s) have "
                "no value; validate records before writing them to the lake")
    return table


# --- catalog and tables ---------------------------------------------------------------------


def catalog_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg ``load_catalog`` properties for the configured lake (also used by dbt)."""
    lake = settings.lake
    if lake.catalog_type == "sql":
        warehouse = Path(lake.warehouse)
        uri = lake.catalog_uri or f"sqlite:///{warehouse / 'catalog.db'}"
        return {"type": "sql", "uri": uri, "warehouse": warehouse.as_uri()}
    props = {"type": "glue", "warehouse": lake.warehouse}
    if lake.catalog_uri:
        props["glue.endpoint"] = lake.catalog_uri
    if lake.s3_endpoint:
        props["s3.endpoint"] = lake.s3_endpoint
    return props


def catalog(settings: Settings) -> Catalog:
    """A new catalog client (cheap: ~1 ms for the sqlite one; not cached, so a warehouse folder
    removed and recreated, as by the demo, is never served from a stale connection)."""
    from pyiceberg.catalog import load_catalog

    props = catalog_properties(settings)
    if props["type"] == "sql":
        Path(settings.lake.warehouse).mkdir(parents=True, exist_ok=True)
    return load_catalog("mercury", **props)


def _stream(stream_name: str) -> registry.Stream:
    spec = registry.stream(stream_name)
    if not spec.lake_table:
        raise ValueError(f"stream {stream_name!r} has no lake table in the registry")
    return spec


def _table_name(spec: registry.Stream) -> str:
    """The lake table of a stream ``_stream`` returned (it refuses one without)."""
    return cast(str, spec.lake_table)


def create_table(cat: Catalog, identifier: str, schema: pa.Schema, properties: dict[str, str],
                 partition: tuple | None = None) -> Table:
    """Create ``identifier`` (and its namespace) partitioned by at most one field
    ``(source column, transform, name)``. A writer that loses the race to create it gets the
    winner's table: every table of the lake is created on first write, by whoever comes first."""
    from pyiceberg.exceptions import TableAlreadyExistsError

    cat.create_namespace_if_not_exists(identifier.rpartition(".")[0])
    try:
        with cat.create_table_transaction(identifier, schema=schema,
                                          properties=properties) as tx:
            if partition is not None:
                with tx.update_spec() as update:
                    update.add_field(*partition)
    except TableAlreadyExistsError:
        pass  # another writer created it first
    return cat.load_table(identifier)


def ensure_table(settings: Settings, stream_name: str) -> Table:
    """The stream's table, created (with its namespace) if missing, and given any column the
    latest contract added. Partitioned by day of the stream's event time where it has one."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.transforms import DayTransform

    spec = _stream(stream_name)
    cat = catalog(settings)
    schema = arrow_schema(spec.schema_subject)
    try:
        table = cat.load_table(_table_name(spec))
    except NoSuchTableError:
        properties = {"mercury.stream": spec.name, "mercury.owner": spec.owner,
                      "mercury.schema_subject": spec.schema_subject}
        if spec.event_id_field:
            properties["mercury.event_id_field"] = spec.event_id_field
        time_field = _partition_time_field(spec, schema)
        return create_table(cat, _table_name(spec), schema, properties,
                            (time_field, DayTransform(), f"{time_field}_day") if time_field
                            else None)
    present = {f.name for f in table.schema().fields}
    if any(name not in present for name in schema.names):
        with table.update_schema() as update:
            update.union_by_name(schema)
        table = cat.load_table(_table_name(spec))
    return table


def _partition_time_field(spec: registry.Stream, schema: pa.Schema) -> str | None:
    field = spec.event_time_field
    if field and field in schema.names and pa.types.is_timestamp(schema.field(field).type):
        return field
    return None


def read(settings: Settings, stream_name: str,
         row_filter: str | BooleanExpression | None = None,
         snapshot_id: int | None = None) -> pa.Table:
    """The current snapshot (or snapshot ``snapshot_id``) of the stream's table, optionally
    filtered, as Arrow."""
    from pyiceberg.expressions import AlwaysTrue

    spec = _stream(stream_name)
    table = catalog(settings).load_table(_table_name(spec))
    return table.scan(row_filter=AlwaysTrue() if row_filter is None else row_filter,
                      snapshot_id=snapshot_id).to_arrow()


def snapshot_ids(settings: Settings, stream_name: str) -> tuple[int | None, frozenset[int]]:
    """The stream table's current snapshot id (None if it has no table or no data yet) and the
    ids of the snapshots it still keeps (readable with ``read(..., snapshot_id=...)``)."""
    from pyiceberg.exceptions import NoSuchTableError

    spec = _stream(stream_name)
    try:
        table = catalog(settings).load_table(_table_name(spec))
    except NoSuchTableError:
        return None, frozenset()
    current = table.current_snapshot()
    return (None if current is None else current.snapshot_id,
            frozenset(s.snapshot_id for s in table.snapshots()))


def touched_days(settings: Settings, stream_name: str, since: int,
                 until: int) -> frozenset[date] | None:
    """The days (of event time: the partitions) holding a data file that a snapshot after
    ``since``, up to ``until``, added or removed; None when that cannot be told (``since`` is
    not an ancestor of ``until`` or was expired, or the table is not partitioned by day), so
    the caller must look at every day. Rows that changed are in these days; rows in them may
    also be unchanged (compaction rewrites files)."""
    from datetime import timedelta

    from pyiceberg.manifest import ManifestEntryStatus
    from pyiceberg.transforms import DayTransform

    table = catalog(settings).load_table(_table_name(_stream(stream_name)))
    chain: set[int] = set()
    snapshot = table.snapshot_by_id(until)
    while snapshot is not None and snapshot.snapshot_id != since:
        chain.add(snapshot.snapshot_id)
        snapshot = None if snapshot.parent_snapshot_id is None else \
            table.snapshot_by_id(snapshot.parent_snapshot_id)
    if snapshot is None:
        return None
    specs = table.specs()
    days: set[date] = set()
    epoch = date(1970, 1, 1)
    for snapshot_id in chain:
        # A snapshot's own manifests list what it added and removed; a removal is not carried
        # into later snapshots' manifests, so each snapshot of the chain is read.
        in_chain = cast("Snapshot", table.snapshot_by_id(snapshot_id))  # found above
        for manifest in in_chain.manifests(table.io):
            if manifest.added_snapshot_id != snapshot_id:
                continue
            fields = specs[manifest.partition_spec_id].fields
            if len(fields) != 1 or not isinstance(fields[0].transform, DayTransform):
                return None
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                if entry.status == ManifestEntryStatus.EXISTING:
                    continue
                value = entry.data_file.partition[0]
                if value is None:
                    return None
                days.add(epoch + timedelta(days=int(value)))
    return frozenset(days)


# --- writes ---------------------------------------------------------------------------------


def upsert(settings: Settings, stream_name: str, records: list[dict]) -> UpsertResult:
    """Write validated records, one row per event id; safe to repeat (see the module doc)."""
    from pyiceberg.exceptions import CommitFailedException

    spec = _stream(stream_name)
    key = spec.event_id_field
    if not key:
        raise ValueError(f"stream {stream_name!r} has no event id field to upsert on")
    table = ensure_table(settings, stream_name)
    incoming = records_to_arrow(spec.schema_subject, records)
    if incoming.num_rows == 0:
        return UpsertResult(0, 0)
    order = ARRIVAL_FIELD if ARRIVAL_FIELD in incoming.column_names else None
    unique = _first_per_key(incoming, key, order)
    collapsed = incoming.num_rows - unique.num_rows
    time_field = _partition_time_field(spec, incoming.schema)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            result = _merge(table, unique, key, order, time_field)
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS:
                raise
            table = catalog(settings).load_table(_table_name(spec))  # someone committed first
            continue
        return UpsertResult(result.inserted, result.updated_or_unchanged, result.replaced,
                            collapsed)
    raise AssertionError("unreachable")


def _first_per_key(table: pa.Table, key: str, order: str | None) -> pa.Table:
    """One row per key: the smallest ``order`` value, then the first position; arrival order
    of the kept rows is preserved."""
    n = table.num_rows
    if n < 2:
        return table
    columns = {"k": table[key], "pos": pa.array(range(n), type=pa.int64())}
    sort_keys = [("k", "ascending")]
    if order:
        columns["o"] = table[order]
        sort_keys.append(("o", "ascending"))
    sort_keys.append(("pos", "ascending"))
    work = pa.table(columns)
    ranked = pc.sort_indices(work, sort_keys=sort_keys)
    keys = work["k"].take(ranked)
    starts = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).combine_chunks()
    keep = pc.filter(ranked, pa.concat_arrays([pa.array([True]), starts]))
    if len(keep) == n:
        return table
    return table.take(pc.take(keep, pc.sort_indices(keep)))


def _to_table_layout(batch: pa.Table, table: Table) -> pa.Table:
    """``batch`` cast to the Iceberg table's Arrow schema (microsecond timestamps, field ids);
    a table column the batch lacks (one the contract no longer has) is written as nulls."""
    target = table.schema().as_arrow()
    columns = []
    for field in target:
        if field.name in batch.column_names:
            columns.append(batch[field.name].cast(field.type))
        elif field.nullable:
            columns.append(pa.nulls(batch.num_rows, field.type))
        else:
            raise LakeWriteError(f"table column {field.name} is required but not in the contract")
    return pa.Table.from_arrays(columns, schema=target)


def _time_range(batch: pa.Table, time_field: str | None) -> BooleanExpression:
    from pyiceberg.expressions import AlwaysTrue, And

    from mercury.lake.predicates import GreaterThanOrEqual, LessThanOrEqual

    if not time_field:
        return AlwaysTrue()
    bounds = pc.min_max(batch[time_field])
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return And(GreaterThanOrEqual(time_field, low.isoformat()),
               LessThanOrEqual(time_field, high.isoformat()))


def _merge(table: Table, batch: pa.Table, key: str, order: str | None,
           time_field: str | None) -> UpsertResult:
    """Append the ids the table lacks and replace rows an earlier-arrived copy supersedes, in
    one Iceberg commit. ``batch`` has one row per key."""
    from pyiceberg.expressions import And

    from mercury.lake.predicates import In

    batch = _to_table_layout(batch, table)
    where = _time_range(batch, time_field)
    stored = _stored_arrivals(table, where, key, order)
    positions = pa.array(range(batch.num_rows), type=pa.int64())
    if stored.num_rows == 0:
        is_stored = pa.array([False] * batch.num_rows)
        replace = is_stored
    else:
        probe = pa.table({key: batch[key], "__pos": positions})
        if order:
            probe = probe.append_column("__order", batch[order])
        joined = probe.join(stored, keys=key, join_type="left outer").sort_by("__pos")
        is_stored = joined["__stored"].is_valid().combine_chunks()
        if order:
            earlier = pc.less(joined["__order"], joined["__stored_order"])
            replace = pc.and_(is_stored, pc.fill_null(earlier, False)).combine_chunks()
        else:
            replace = pa.array([False] * batch.num_rows)
    write_mask = pc.or_(pc.invert(is_stored), replace)
    to_write = batch.filter(write_mask)
    replaced_ids = batch[key].filter(replace).to_pylist()
    n_stored = pc.sum(is_stored.cast(pa.int64())).as_py() or 0
    if to_write.num_rows:
        with table.transaction() as tx:
            if replaced_ids:
                tx.delete(And(where, In(key, replaced_ids)))
            tx.append(to_write)
    return UpsertResult(inserted=batch.num_rows - n_stored, updated_or_unchanged=n_stored,
                        replaced=len(replaced_ids))


def _stored_arrivals(table: Table, where: BooleanExpression, key: str,
                     order: str | None) -> pa.Table:
    """Per stored key in the range: ``__stored`` (true) and the earliest ``__stored_order``."""
    if table.current_snapshot() is None:
        return pa.table({key: pa.array([], pa.string())})
    fields = (key, order) if order else (key,)
    found = table.scan(row_filter=where, selected_fields=fields).to_arrow()
    if order:
        found = found.group_by(key).aggregate([(order, "min")])
        found = pa.table({key: found[key], "__stored_order": found[f"{order}_min"]})
    else:
        found = found.group_by(key).aggregate([])
    return found.append_column("__stored", pa.array([True] * found.num_rows))

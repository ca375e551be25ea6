"""The local vector index: LanceDB tables in a folder, versions and aliases in a JSON registry.

Design notes: docs/RETRIEVAL.md, "The local index (LanceDB) in detail".
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import FTS, Bitmap, BTree, IvfHnswSq
from lancedb.query import FullTextOperator, MultiMatchQuery

from mercury.config import LocalVectorConfig
from mercury.retrieval import hybrid
from mercury.retrieval.index import (
    ChunkRow,
    DocumentWrite,
    Hit,
    LedgerEntry,
    SearchFilter,
    VectorIndex,
    VectorIndexError,
    VersionSpec,
)

if TYPE_CHECKING:
    from lancedb.db import LanceDBConnection

log = logging.getLogger(__name__)
VERSION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
STATES = ("building", "ready", "retired")
NO_FILTER = SearchFilter()

HIT_COLUMNS = ["chunk_id", "doc_id", "title", "heading", "source_url", "text"]
BITMAP_COLUMNS = ("language", "doc_type", "merchant_id")  # few distinct values
BTREE_COLUMNS = ("doc_id", "chunk_id")  # many distinct values

# ANN settings, measured (see the module docstring). Partitions of about 8K rows let the
# index build use every core; one big HNSW graph took three times as long at 30K rows.
ROWS_PER_PARTITION = 8192
REINDEX_GROWTH = 4.0  # rebuild the vector index at this multiple of the rows it was built for
# ... or when it has more delta segments than this (one per upkeep; not measured: a bound on
# the per-query cost of searching every segment, and on fragments that cannot be compacted)
MAX_VECTOR_SEGMENTS = 16
OVERDUE_FACTOR = 4  # an upkeep put off for this many times optimize_every writes is overdue
UPKEEP_RETRY_S = 60.0  # after a failed upkeep, not due again in this process for this long
SEARCH_EF = 100
REFINE_FACTOR = 3
MIN_NPROBES = 20

# The full-text analysers, by the hybrid module's lexical languages: LanceDB's tokenizer
# language names (its stemmers and stop-word lists); accents are folded so that "refusee"
# typed without them still matches "refusée".
FTS_LANGUAGES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish"}
assert set(FTS_LANGUAGES) == set(hybrid.LEXICAL_LANGUAGES)

COMMIT_ATTEMPTS = 5
LOOKUP_BATCH = 500  # ids per IN (...) list when reading the ledger or stored vectors

T = TypeVar("T")


def chunk_schema(dimension: int, lexical: bool = True) -> pa.Schema:
    """The chunks table; ``lexical`` adds one full-text column per analysed language (a
    version created before hybrid search has none and is searched by kNN alone)."""
    lexical_columns = [pa.field(f, pa.string()) for f in hybrid.LEXICAL_FIELDS] if lexical else []
    return pa.schema([
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("position", pa.int32()),
        pa.field("doc_type", pa.string()),
        pa.field("language", pa.string()),
        pa.field("merchant_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("heading", pa.string()),
        pa.field("source_url", pa.string()),
        pa.field("text", pa.string()),
        pa.field("updated_at", pa.int64()),
        pa.field("vector", pa.list_(pa.float32(), dimension)),
        *lexical_columns,
    ])


def fts_index(language: str) -> FTS:
    return FTS(language=FTS_LANGUAGES[language], stem=True, remove_stop_words=True,
               lower_case=True, ascii_folding=True)


LEDGER_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("order_key", pa.string()),  # JSON: order keys mix ints and strings
    pa.field("deleted", pa.bool_()),
    pa.field("chunk_ids", pa.list_(pa.string())),
])


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


def filter_sql(filters: SearchFilter) -> str | None:
    clauses = [f"{column} = {sql_string(value)}" for column, value in filters.as_dict().items()]
    return " AND ".join(clauses) or None


def batched(items: list[str], size: int = LOOKUP_BATCH) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def with_commit_retries(commit: Callable[[], T]) -> T:
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            return commit()
        except Exception as exc:  # Lance reports conflicts as generic errors: match the text
            if "conflict" not in str(exc).lower() or attempt == COMMIT_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


class Registry:
    """Version records and aliases in one JSON file, updated under a file lock."""

    def __init__(self, folder: Path):
        self.file = folder / "registry.json"
        self.lock = folder / "registry.lock"

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.file.read_text())
        except FileNotFoundError:
            return {"versions": {}, "aliases": {}}

    @contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Yields the registry to change in place; it is written back if the block succeeds."""
        with file_lock(self.lock):
            state = self.read()
            yield state
            self._replace(state)

    def _replace(self, state: dict[str, Any]) -> None:
        fd, temp = tempfile.mkstemp(dir=self.file.parent, prefix=".registry-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(state, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.file)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        # The rename itself is durable only once the folder is synced.
        folder = os.open(self.file.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def spec_from_record(record: dict[str, Any]) -> VersionSpec:
    return VersionSpec(**{f.name: record[f.name] for f in fields(VersionSpec)})


def chunks_table_name(version: str) -> str:
    return f"{version}__chunks"


def ledger_table_name(version: str) -> str:
    return f"{version}__ledger"


def rows_to_arrow(rows: list[ChunkRow], dimension: int, lexical: bool = True) -> pa.Table:
    schema = chunk_schema(dimension, lexical)
    if not rows:
        return schema.empty_table()
    wrong = [row.chunk_id for row in rows if np.size(row.vector) != dimension]
    if wrong:
        raise VectorIndexError(f"chunks {wrong[:3]} do not have {dimension}-dimensional vectors")
    vectors = np.stack([np.asarray(row.vector, dtype=np.float32).reshape(-1) for row in rows])
    columns: dict[str, Any] = {
        name: [getattr(row, name) for row in rows] for name in schema.names
        if name != "vector" and name not in hybrid.LEXICAL_FIELDS}
    if lexical:  # the chunk's words in its own language's column, null in the others
        for language in hybrid.LEXICAL_LANGUAGES:
            columns[hybrid.lexical_field(language)] = [
                hybrid.lexical_text(row) if row.language == language else None for row in rows]
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dimension)
    return pa.table(columns, schema=schema)


def ledger_to_arrow(entries: list[LedgerEntry]) -> pa.Table:
    return pa.table({
        "doc_id": [e.doc_id for e in entries],
        "order_key": [json.dumps(list(e.order_key)) for e in entries],
        "deleted": [e.deleted for e in entries],
        "chunk_ids": [list(e.chunk_ids) for e in entries],
    }, schema=LEDGER_SCHEMA)


def hit_from(row: dict[str, Any], score: float) -> Hit:
    return Hit(chunk_id=row["chunk_id"], doc_id=row["doc_id"], title=row["title"],
               heading=row["heading"], source_url=row["source_url"], text=row["text"],
               score=score)


class LocalVectorIndex(VectorIndex):
    """The VectorIndex on LanceDB in ``config.path``; safe to use from several processes.

    The keyword arguments are engine tuning (tests set them small): the rows per IVF
    partition, the growth and the number of delta segments that make the upkeep build the
    vector index again, and the number of writes after which the upkeep is overdue (default
    ``OVERDUE_FACTOR`` times ``config.optimize_every``)."""

    def __init__(self, config: LocalVectorConfig, *,
                 rows_per_partition: int = ROWS_PER_PARTITION,
                 reindex_growth: float = REINDEX_GROWTH,
                 max_vector_segments: int = MAX_VECTOR_SEGMENTS,
                 overdue_writes: int | None = None):
        if rows_per_partition < 1 or reindex_growth <= 1.0 or max_vector_segments < 1:
            raise ValueError("rows_per_partition and max_vector_segments must be >= 1, "
                             "reindex_growth > 1")
        self.config = config
        self.path = Path(config.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(self.path)
        # A local path gives the embedded connection (typed as the base DBConnection).
        self.db = cast("LanceDBConnection",
                       lancedb.connect(self.path, read_consistency_interval=timedelta(0)))
        self.rows_per_partition = rows_per_partition
        self.reindex_growth = reindex_growth
        self.max_vector_segments = max_vector_segments
        self.overdue_writes = max(config.optimize_every,
                                  overdue_writes or OVERDUE_FACTOR * config.optimize_every)
        self._tables: dict[str, Any] = {}
        self._retry_after: dict[str, float] = {}  # version -> monotonic time

    # ---- versions and aliases --------------------------------------------------------------

    def create_version(self, spec: VersionSpec) -> None:
        if not VERSION_NAME.fullmatch(spec.name):
            raise VectorIndexError(f"version name {spec.name!r} must be lower case letters, "
                                   f"digits and dashes")
        with self.registry.update() as state:
            existing = state["versions"].get(spec.name)
            if existing is not None:
                if existing["dimension"] != spec.dimension:
                    raise VectorIndexError(
                        f"version {spec.name!r} exists with dimension {existing['dimension']}, "
                        f"not {spec.dimension}")
                return
            # Tables first: a record must never point at storage that is not there.
            chunks = self.db.create_table(chunks_table_name(spec.name),
                                          schema=chunk_schema(spec.dimension), exist_ok=True)
            # Full-text indexes from the start (an empty table takes them): rows written
            # later are searched flat until the upkeep's optimize folds them in.
            existing = {index.columns[0] for index in chunks.list_indices()}
            for language in hybrid.LEXICAL_LANGUAGES:
                if hybrid.lexical_field(language) not in existing:
                    chunks.create_index(hybrid.lexical_field(language),
                                        config=fts_index(language))
            self.db.create_table(ledger_table_name(spec.name), schema=LEDGER_SCHEMA,
                                 exist_ok=True)
            state["versions"][spec.name] = {**asdict(spec), "writes_since_optimize": 0}

    def versions(self, alias: str) -> list[VersionSpec]:
        records = [r for r in self.registry.read()["versions"].values() if r["alias"] == alias]
        records.sort(key=lambda r: (r["created_at_ms"], r["name"]))
        return [spec_from_record(r) for r in records]

    def set_state(self, name: str, state: str) -> None:
        if state not in STATES:
            raise VectorIndexError(f"state {state!r} is not one of {', '.join(STATES)}")
        with self.registry.update() as registry:
            self._record(registry, name)["state"] = state

    def drop_version(self, name: str) -> None:
        with self._writer_lock(name), self.registry.update() as registry:
            for alias, entry in registry["aliases"].items():
                if entry["target"] == name:
                    raise VectorIndexError(f"alias {alias!r} points at {name!r}; swap the alias "
                                           f"to another version before dropping this one")
            self._tables.pop(chunks_table_name(name), None)
            self._tables.pop(ledger_table_name(name), None)
            self.db.drop_table(chunks_table_name(name), ignore_missing=True)
            self.db.drop_table(ledger_table_name(name), ignore_missing=True)
            registry["versions"].pop(name, None)
            # A rollback must never land on a version that no longer exists.
            for entry in registry["aliases"].values():
                entry["history"] = [v for v in entry["history"] if v != name]

    def alias_target(self, alias: str) -> str | None:
        entry = self.registry.read()["aliases"].get(alias)
        return entry["target"] if entry else None

    def swap_alias(self, alias: str, name: str) -> str | None:
        with self.registry.update() as registry:
            record = self._record(registry, name)
            if record["alias"] != alias:
                raise VectorIndexError(f"version {name!r} was built for alias "
                                       f"{record['alias']!r}, not {alias!r}")
            entry = registry["aliases"].setdefault(alias, {"target": None, "history": []})
            previous = entry["target"]
            if previous != name:
                if previous is not None:
                    entry["history"].append(previous)
                entry["target"] = name
            return previous

    def rollback_alias(self, alias: str) -> str:
        with self.registry.update() as registry:
            entry = registry["aliases"].get(alias)
            if not entry or not entry["history"]:
                raise VectorIndexError(f"alias {alias!r} has no earlier version to roll back to")
            previous = entry["history"][-1]
            if registry["versions"].get(previous, {}).get("state") == "retired":
                # No longer maintained: serving it would answer from stale documents.
                raise VectorIndexError(f"rollback of {alias!r} would serve {previous}, which is "
                                       f"retired (its documents are stale); rebuild instead")
            entry["target"] = entry["history"].pop()
            return entry["target"]

    # ---- writes ------------------------------------------------------------------------------

    def ledger(self, name: str, doc_ids: list[str]) -> dict[str, LedgerEntry]:
        table = self._table(ledger_table_name(name))
        found: dict[str, LedgerEntry] = {}
        for batch in batched(sorted(set(doc_ids))):
            for row in table.search().where(sql_in("doc_id", batch)).to_arrow().to_pylist():
                found[row["doc_id"]] = LedgerEntry(
                    doc_id=row["doc_id"], order_key=tuple(json.loads(row["order_key"])),
                    deleted=row["deleted"], chunk_ids=tuple(row["chunk_ids"] or ()))
        return found

    def vectors(self, name: str, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        table = self._table(chunks_table_name(name))
        dimension = table.schema.field("vector").type.list_size
        found: dict[str, np.ndarray] = {}
        for batch in batched(sorted(set(chunk_ids))):
            result = (table.search().where(sql_in("chunk_id", batch))
                      .select(["chunk_id", "vector"]).to_arrow())
            matrix = (result["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
                      .astype(np.float32, copy=False).reshape(-1, dimension))
            for chunk_id, vector in zip(result["chunk_id"].to_pylist(), matrix, strict=True):
                found[chunk_id] = vector.copy()
        return found

    def write(self, name: str, writes: list[DocumentWrite]) -> None:
        # The last write of a document in one call wins, as if the calls had been separate.
        latest = {w.entry.doc_id: w for w in writes}
        if not latest:
            return
        rows = [row for w in latest.values() for row in w.rows]
        for doc_id, w in latest.items():
            if any(row.doc_id != doc_id for row in w.rows):
                raise VectorIndexError(f"write for {doc_id!r} carries chunks of another document")
        if len({row.chunk_id for row in rows}) != len(rows):
            raise VectorIndexError("a chunk id appears twice in one write")

        with self._writer_lock(name):
            registry = self.registry.read()
            self._record(registry, name)  # dropped while we waited for the lock?
            # The caller checked the ledger before embedding, without the lock; another writer
            # (a rebuild filling the same version) may have stored something newer since.
            stored = self.ledger(name, list(latest))
            latest = {doc_id: w for doc_id, w in latest.items()
                      if doc_id not in stored or w.entry.order_key > stored[doc_id].order_key}
            if not latest:
                return
            rows = [row for w in latest.values() for row in w.rows]
            chunks = self._table(chunks_table_name(name))
            new_rows = rows_to_arrow(rows, registry["versions"][name]["dimension"],
                                     self._lexical(chunks))
            replaced_docs = sql_in("doc_id", sorted(latest))
            with_commit_retries(lambda: (
                chunks.merge_insert("chunk_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(replaced_docs)
                .execute(new_rows)))
            ledger = self._table(ledger_table_name(name))
            entries = ledger_to_arrow([w.entry for w in latest.values()])
            with_commit_retries(lambda: (
                ledger.merge_insert("doc_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(entries)))
            # Counted, never acted on here: the writer runs the upkeep when it is quiet.
            self._count_write(name)

    # ---- upkeep ------------------------------------------------------------------------------

    def maintenance_due(self, name: str, *, overdue: bool = False) -> bool:
        """True when ``optimize_every`` writes (with ``overdue``: ``overdue_writes``) have
        not been folded in by an upkeep yet. Reads the registry only, so it is cheap enough
        for every idle poll; writes of every process count. After a failed upkeep it stays
        False in this process for ``UPKEEP_RETRY_S``, so a broken upkeep is not retried in a
        tight loop."""
        if time.monotonic() < self._retry_after.get(name, 0.0):
            return False
        record = self.registry.read()["versions"].get(name)
        if record is None:
            return False
        waiting = record.get("writes_since_optimize", 0)
        return waiting >= (self.overdue_writes if overdue else self.config.optimize_every)

    def run_upkeep(self, name: str) -> dict[str, Any]:
        """Compacts the version, builds the ANN and scalar indexes once it holds
        ``ann_min_rows`` chunks (again when it has outgrown them), folds the rows written
        since into them; returns what it found and did. Holds the writer lock throughout
        (see "Upkeep" in the module docstring): writes wait, searches do not."""
        started = time.perf_counter()
        with self._writer_lock(name):
            self._record(self.registry.read(), name)  # dropped while we waited for the lock?
            try:
                report = self._optimize_now(name)
            except Exception:
                self._retry_after[name] = time.monotonic() + UPKEEP_RETRY_S
                raise
            # Under the lock no write came in meanwhile: every counted write is folded in.
            with self.registry.update() as registry:
                self._record(registry, name)["writes_since_optimize"] = 0
        self._retry_after.pop(name, None)
        report["seconds"] = round(time.perf_counter() - started, 3)
        log.info("upkeep of %s: %s", name, report)
        return report

    def optimize(self, name: str) -> None:
        """The upkeep on demand (a rebuild, before the version is judged and served)."""
        self.run_upkeep(name)

    # ---- reads -------------------------------------------------------------------------------

    def search(self, name: str, vector: np.ndarray, k: int,
               filters: SearchFilter = NO_FILTER, text: str | None = None) -> list[Hit]:
        if k <= 0:
            return []
        table = self._table(chunks_table_name(name))
        fields = hybrid.lexical_fields_for(filters) if self._lexical(table) else ()
        if text is None or not text.strip() or not fields:
            return [hit_from(r, score=1.0 - r["_distance"])
                    for r in self._knn(name, table, vector, k, filters)]
        by_meaning = self._knn(name, table, vector, hybrid.depth(k), filters)
        words = MultiMatchQuery(text, list(fields), boosts=None, operator=FullTextOperator.OR)
        builder = (table.search(words, query_type="fts")
                   .select([*HIT_COLUMNS, "_score"]).limit(hybrid.depth(k)))
        where = filter_sql(filters)
        if where:
            builder = builder.where(where, prefilter=True)
        by_words = builder.to_arrow().to_pylist()
        rows = {r["chunk_id"]: r for r in (*by_words, *by_meaning)}
        fused = hybrid.fuse([[r["chunk_id"] for r in by_meaning],
                             [r["chunk_id"] for r in by_words]], k,
                            group_of={chunk_id: r["doc_id"] for chunk_id, r in rows.items()})
        return [hit_from(rows[chunk_id], score) for chunk_id, score in fused]

    def _knn(self, name: str, table: Any, vector: np.ndarray, k: int,
             filters: SearchFilter) -> list[dict[str, Any]]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        dimension = table.schema.field("vector").type.list_size
        if query.shape[0] != dimension:
            raise VectorIndexError(f"query has {query.shape[0]} dimensions, version {name!r} "
                                   f"has {dimension}")
        # ef, nprobes and refine only matter once a vector index exists; without one the
        # search is exact. The vector column is not selected: it is large and not needed.
        builder = (table.search(query, vector_column_name="vector")
                   .distance_type("cosine")
                   .select([*HIT_COLUMNS, "_distance"])
                   .minimum_nprobes(MIN_NPROBES)
                   .ef(max(SEARCH_EF, REFINE_FACTOR * k))  # Lance: ef >= k * refine_factor
                   .refine_factor(REFINE_FACTOR)
                   .limit(k))
        where = filter_sql(filters)
        if where:
            builder = builder.where(where, prefilter=True)
        return builder.to_arrow().to_pylist()

    def live_documents(self, name: str) -> set[str]:
        doc_ids = self._table(chunks_table_name(name)).search().select(["doc_id"]).to_arrow()
        return set(pc.unique(doc_ids["doc_id"]).to_pylist())

    def close(self) -> None:
        self._tables.clear()

    # ---- internals ---------------------------------------------------------------------------

    @staticmethod
    def _lexical(chunks: Any) -> bool:
        """Whether the version was created with the full-text columns."""
        return hybrid.LEXICAL_FIELDS[0] in chunks.schema.names

    def _record(self, registry: dict[str, Any], name: str) -> dict[str, Any]:
        try:
            return registry["versions"][name]
        except KeyError:
            raise VectorIndexError(f"no index version {name!r} in {self.path}") from None

    def _table(self, table_name: str) -> Any:
        table = self._tables.get(table_name)
        if table is None:
            try:
                table = self.db.open_table(table_name)
            except ValueError as exc:  # lancedb: "Table '...' was not found"
                raise VectorIndexError(f"no index table {table_name!r} in {self.path}") from exc
            self._tables[table_name] = table
        return table

    @contextmanager
    def _writer_lock(self, name: str) -> Iterator[None]:
        if not VERSION_NAME.fullmatch(name):
            raise VectorIndexError(f"version name {name!r} must be lower case letters, "
                                   f"digits and dashes")
        with file_lock(self.path / f"writer-{name}.lock"):
            yield

    def _count_write(self, name: str) -> None:
        """Counts the write in the registry, so restarts and several writer processes add up;
        ``run_upkeep`` sets it back to 0."""
        with self.registry.update() as registry:
            record = self._record(registry, name)
            record["writes_since_optimize"] = record.get("writes_since_optimize", 0) + 1

    def _optimize_now(self, name: str) -> dict[str, Any]:
        """The upkeep itself; the caller holds the writer lock."""
        chunks = self._table(chunks_table_name(name))
        fragments_before = chunks.stats()["fragment_stats"]["num_fragments"]
        # Compact first, so a new index is built over few large fragments. Lance's optimize
        # also folds rows written since into the existing indexes.
        chunks.optimize()
        self._table(ledger_table_name(name)).optimize()
        rows = chunks.count_rows()
        indexes = {index.columns[0]: index for index in chunks.list_indices()}
        rebuilt = None
        if rows >= self.config.ann_min_rows:
            rebuilt = self._vector_index_upkeep(name, chunks, rows, indexes.get("vector"))
            for column in BITMAP_COLUMNS:
                if column not in indexes:
                    chunks.create_index(column, config=Bitmap())
            for column in BTREE_COLUMNS:
                if column not in indexes:
                    chunks.create_index(column, config=BTree())
        vector = chunks.index_stats("vector_idx") if rows >= self.config.ann_min_rows else None
        return {"rows": rows, "fragments_before": fragments_before,
                "fragments_after": chunks.stats()["fragment_stats"]["num_fragments"],
                "unindexed_rows": vector.num_unindexed_rows if vector else None,
                "vector_index_built": rebuilt}

    def _vector_index_upkeep(self, name: str, chunks: Any, rows: int,
                             existing: Any | None) -> str | None:
        """Builds the vector index when there is none or it no longer fits the version;
        returns why it was built, or None. Replacing the index commits atomically: searches
        use the old one until then."""
        record = self._record(self.registry.read(), name)
        partitions = max(1, rows // self.rows_per_partition)
        if existing is None:
            reason = "first build"
        elif record.get("ann_rows") is None:
            # Built before builds were recorded: its size is unknown, take today's as base.
            self._record_vector_index(name, rows, None)
            reason = None
        elif (rows > self.reindex_growth * record["ann_rows"]
              and partitions > (record.get("ann_partitions") or 0)):
            # Folding rows in never adds partitions, so each partition (and its HNSW graph)
            # grew with the version since the build (finding 6 of docs/PERFORMANCE.md).
            reason = f"outgrown: {rows} rows > {self.reindex_growth:g} x {record['ann_rows']}"
        elif (existing.num_segments or 1) > self.max_vector_segments:
            # Lance folds new rows in as one more delta segment per optimize, searched one
            # by one, and never compacts fragments across segments: both grow by one per
            # upkeep (finding 7). A rebuild makes it one segment again.
            reason = f"{existing.num_segments} segments > {self.max_vector_segments}"
        else:
            reason = None
        if reason is not None:
            log.info("building the vector index of %s (%s): %d rows, %d partitions",
                     name, reason, rows, partitions)
            chunks.create_index("vector", replace=True, config=IvfHnswSq(
                distance_type="cosine", num_partitions=partitions))
            self._record_vector_index(name, rows, partitions)
        return reason

    def _record_vector_index(self, name: str, rows: int, partitions: int | None) -> None:
        with self.registry.update() as registry:
            record = self._record(registry, name)
            record["ann_rows"], record["ann_partitions"] = rows, partitions


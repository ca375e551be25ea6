"""Profile CDC: changes of ``mercury.user_profiles`` become ``user_profile_cdc`` events.

Design notes: docs/CDC.md, "The profile CDC pump in detail".
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import psycopg
from psycopg.conninfo import make_conninfo

from mercury.cdc import pgoutput
from mercury.config import Settings
from mercury.contracts import registry, schemas
from mercury.contracts.validation import validator
from mercury.eventlog import EventProducer, encode_record, open_producer
from mercury.generator import profiles_pg
from mercury.quality.dead_letters import make_dead_letter

CONNECTOR = "postgresql"
# Output functions run in the reading session: pin the settings that shape their text.
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres"
HEARTBEAT_PREFIX = "mercury.cdc.heartbeat"
HEARTBEAT_BYTES = 64 * 2**20
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,57}$")  # leaves room for the "_init" suffix


class CdcError(Exception):
    """CDC cannot go on; the message says what to fix."""


@dataclass(frozen=True)
class CdcTarget:
    """What is captured, through which slot and publication, into which stream."""

    table: str = profiles_pg.TABLE
    slot: str = "mercury_profiles_cdc"
    publication: str = "mercury_profiles_cdc"
    stream: str = "user_profile_cdc"

    def __post_init__(self):
        parts = self.table.split(".")
        for name in (*parts, self.slot, self.publication):
            if not _IDENTIFIER.match(name):
                raise CdcError(f"{name!r} must be a lower-case SQL identifier (a-z, 0-9, _)")
        if len(parts) != 2:
            raise CdcError(f"table {self.table!r} must be schema-qualified: schema.table")
        registry.stream(self.stream)  # fails now on an unknown stream, not mid-pump

    @property
    def schema(self) -> str:
        return self.table.split(".")[0]

    @property
    def name(self) -> str:
        return self.table.split(".")[1]

    @property
    def snapshot_slot(self) -> str:
        return f"{self.slot}_init"


PROFILES = CdcTarget()


@dataclass
class PumpResult:
    changes: int = 0  # c/u/d events read from the slot (written, or dead-lettered)
    snapshot_rows: int = 0  # r events of the initial snapshot (written, or dead-lettered)
    transactions: int = 0
    dead_letters: int = 0
    last_lsn: int | None = None  # where the slot now resumes (end of the last transaction)
    ops: Counter = field(default_factory=Counter)  # events written to the stream, by op

    def add(self, other: PumpResult) -> None:
        self.changes += other.changes
        self.snapshot_rows += other.snapshot_rows
        self.transactions += other.transactions
        self.dead_letters += other.dead_letters
        self.last_lsn = other.last_lsn if other.last_lsn is not None else self.last_lsn
        self.ops.update(other.ops)

    def line(self) -> str:
        ops = " ".join(f"{op}={n}" for op, n in sorted(self.ops.items())) or "none"
        lsn = pgoutput.int_to_lsn(self.last_lsn) if self.last_lsn is not None else "-"
        return (f"{self.changes:,} changes + {self.snapshot_rows:,} snapshot rows in "
                f"{self.transactions:,} transactions (ops: {ops}), {self.dead_letters} dead "
                f"letters; slot at {lsn}")


# --- pure: pgoutput messages -> change records ---------------------------------------------


def profile_fields(stream: str = "user_profile_cdc") -> tuple[str, ...]:
    """The row fields of the contract (``after``), in the contract's order."""
    schema = schemas.load(registry.stream(stream).schema_subject).schema
    after = next(f for f in schema["fields"] if f["name"] == "before")
    row = next(t for t in after["type"] if isinstance(t, dict))
    return tuple(f["name"] for f in row["fields"])


def change_record(op: str, before: dict | None, after: dict | None, *, db: str, schema: str,
                  table: str, lsn: int, tx_id: int | None, ts_ms: int) -> dict:
    """The envelope, with a fixed key order so the same change always has the same bytes.
    A delete carries the key only: its old row (``before``) is dropped here, so no personal
    value of a deleted profile reaches the stream or any sink behind it."""
    user_id = (after or before or {})["user_id"]
    if op == "d":
        before = None
    return {"before": before, "after": after, "op": op,
            "source": {"connector": CONNECTOR, "db": db, "schema": schema, "table": table,
                       "lsn": lsn, "tx_id": tx_id, "ts_ms": ts_ms},
            "ts_ms": ts_ms, "key": {"user_id": user_id}}


def project(columns: Iterable[tuple[str, int]], values: Iterable, fields: tuple[str, ...]
            ) -> dict:
    """A row as the contract's record: its fields in order, values converted by type."""
    row = {name: pgoutput.parse_text(type_oid, value)
           for (name, type_oid), value in zip(columns, values, strict=True)}
    missing = [f for f in fields if f not in row]
    if missing:
        raise CdcError(f"the table has no column {', '.join(missing)} that the contract needs")
    return {f: row[f] for f in fields}


class ChangeDecoder:
    """Feeds on (lsn, pgoutput bytes) rows of a slot; returns the change records they make.

    Relations are remembered across calls (pgoutput sends one before the first change of a
    table in each decoding session). Update and delete need the whole old row, i.e. the table
    must have REPLICA IDENTITY FULL.
    """

    def __init__(self, db: str, fields: tuple[str, ...]):
        self.db = db
        self.fields = fields
        self.relations: dict[int, pgoutput.Relation] = {}
        self.begin: pgoutput.Begin | None = None
        self.last_commit: pgoutput.Commit | None = None
        self.transactions = 0

    def feed(self, lsn: int, data: bytes) -> list[dict]:
        message = pgoutput.decode(data)
        if isinstance(message, pgoutput.Begin):
            self.begin = message
        elif isinstance(message, pgoutput.Commit):
            self.begin, self.last_commit = None, message
            self.transactions += 1
        elif isinstance(message, pgoutput.Relation):
            self.relations[message.oid] = message
        elif isinstance(message, pgoutput.Insert | pgoutput.Update | pgoutput.Delete):
            return self._change(lsn, message)
        return []

    def _change(self, lsn: int, message) -> list[dict]:
        if self.begin is None:
            raise CdcError(f"change at {pgoutput.int_to_lsn(lsn)} outside a transaction")
        relation = self.relations.get(message.relation_oid)
        if relation is None:
            raise CdcError(f"change at {pgoutput.int_to_lsn(lsn)} of relation "
                           f"{message.relation_oid} that was never described")

        begin = self.begin  # not None (checked above), which make() cannot see

        def make(op, before, after):
            return change_record(op, before, after, db=self.db, schema=relation.namespace,
                                 table=relation.name, lsn=lsn, tx_id=begin.xid,
                                 ts_ms=begin.commit_ms)

        if isinstance(message, pgoutput.Insert):
            return [make("c", None, self._row(relation, message.new))]
        old = self._old_row(relation, message, lsn)
        if isinstance(message, pgoutput.Delete):
            return [make("d", old, None)]
        new_values = tuple(o if n is pgoutput.UNCHANGED else n
                           for o, n in zip(message.old, message.new, strict=True))
        new = self._row(relation, new_values)
        if new["user_id"] != old["user_id"]:  # a changed key: Debezium emits delete + create
            return [make("d", old, None), make("c", None, new)]
        return [make("u", old, new)]

    def _old_row(self, relation, message, lsn: int) -> dict:
        if message.old_kind != "O":
            raise CdcError(f"{relation.namespace}.{relation.name} at "
                           f"{pgoutput.int_to_lsn(lsn)} carries no whole old row: set "
                           "REPLICA IDENTITY FULL on the table")
        return self._row(relation, message.old)

    def _row(self, relation: pgoutput.Relation, values) -> dict:
        if any(v is pgoutput.UNCHANGED for v in values):
            raise CdcError(f"{relation.name}: an unchanged TOAST value has no old value to use")
        return project(((c.name, c.type_oid) for c in relation.columns), values, self.fields)


# --- Postgres -------------------------------------------------------------------------------


def _conninfo(settings: Settings, **extra) -> str:
    return make_conninfo(settings.postgres.conninfo(), options=SESSION_OPTIONS, **extra)


def _connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(_conninfo(settings), autocommit=True)


def _one_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that always answers one (psycopg types ``fetchone`` Optional)."""
    return cast("tuple[Any, ...]", cursor.fetchone())


def ensure_publication(conn: psycopg.Connection, target: CdcTarget) -> None:
    """Idempotent: creates the table (the generator's DDL) if it is the profile table and
    missing, checks REPLICA IDENTITY FULL, creates or completes the publication."""
    identity = conn.execute("SELECT relreplident FROM pg_class WHERE oid = to_regclass(%s)",
                            (target.table,)).fetchone()
    if identity is None and target.table == profiles_pg.TABLE:
        conn.execute(profiles_pg.DDL)
        identity = ("f",)
    if identity is None:
        raise CdcError(f"table {target.table} does not exist")
    if identity[0] != "f":
        raise CdcError(f"{target.table} needs REPLICA IDENTITY FULL so that updates and "
                       f"deletes carry the old row: ALTER TABLE {target.table} REPLICA "
                       "IDENTITY FULL")
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                    (target.publication,)).fetchone() is None:
        conn.execute(f"CREATE PUBLICATION {target.publication} FOR TABLE {target.table} "
                     "WITH (publish = 'insert, update, delete')")
    elif conn.execute("SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND "
                      "schemaname = %s AND tablename = %s",
                      (target.publication, target.schema, target.name)).fetchone() is None:
        conn.execute(f"ALTER PUBLICATION {target.publication} ADD TABLE {target.table}")


def _slot(conn: psycopg.Connection, name: str) -> tuple | None:
    return conn.execute("SELECT plugin, database, active_pid, restart_lsn::text, "
                        "confirmed_flush_lsn::text FROM pg_replication_slots "
                        "WHERE slot_name = %s", (name,)).fetchone()


def _exec(pgconn, statement: str):
    """A statement on the replication connection: walsender takes only simple queries."""
    result = pgconn.exec_(statement.encode())
    if result.status not in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
        raise CdcError(f"{statement.split()[0]}: "
                       f"{(result.error_message or b'').decode(errors='replace').strip()}")
    return result


class Pump:
    """One reader of one slot: holds the advisory lock, the connection and the producer."""

    def __init__(self, settings: Settings, target: CdcTarget = PROFILES,
                 producer: EventProducer | None = None, heartbeat_bytes: int = HEARTBEAT_BYTES):
        self.settings, self.target = settings, target
        self.heartbeat_bytes = heartbeat_bytes
        self.conn = _connect(settings)
        lock = f"mercury.cdc:{target.slot}"
        if not _one_row(self.conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock,)))[0]:
            self.conn.close()
            raise CdcError(f"another pump holds slot {target.slot}; run one at a time")
        try:
            self.producer = producer or open_producer(settings, writer_id=f"cdc.{target.slot}")
        except Exception:
            self.conn.close()
            raise
        self._own_producer = producer is None
        self.fields = profile_fields(target.stream)
        self.spec = registry.stream(target.stream)
        self.check = validator(self.spec.schema_subject)
        self.decoder = ChangeDecoder(self.conn.info.dbname, self.fields)

    def close(self) -> None:
        try:
            if self._own_producer:
                self.producer.close()
        finally:
            self.conn.close()  # ends the session, which releases the advisory lock

    def __enter__(self) -> Pump:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_once(self, max_changes: int = 10_000) -> PumpResult:
        """Set up if needed (snapshot included), then one batch of changes."""
        result = PumpResult()
        slot = _slot(self.conn, self.target.slot)
        if slot is None:
            ensure_publication(self.conn, self.target)
            self._snapshot(result)
        elif slot[0] != "pgoutput" or slot[1] != self.conn.info.dbname:
            raise CdcError(f"slot {self.target.slot} exists with plugin {slot[0]} on database "
                           f"{slot[1]}; `mercury cdc reset` drops it")
        self._changes(result, max_changes)
        return result

    def _emit(self, record: dict, result: PumpResult) -> None:
        key = record["key"]["user_id"]
        verdict = self.check.validate(record)
        if verdict.ok:
            self.producer.send(self.target.stream,
                               encode_record(self.settings, self.target.stream, record), key)
            result.ops[record["op"]] += 1
            return
        position = f"pg:{self.target.slot}:{record['source']['lsn']}:{key}"
        letter = make_dead_letter(self.target.stream, position, orjson.dumps(record), verdict,
                                  record["source"]["ts_ms"])
        dead_letter_stream = cast(str, self.spec.dead_letter_stream)
        self.producer.send(dead_letter_stream,
                           encode_record(self.settings, dead_letter_stream, letter),
                           letter["dlq_id"])
        result.dead_letters += 1

    def _snapshot(self, result: PumpResult) -> None:
        try:
            self._snapshot_into(result)
        except BaseException:
            # The temporary slot goes with its session, but the server ends that session after
            # the client has hung up: wait for it, so a retry starts clean.
            self._wait_until_gone(self.target.snapshot_slot)
            raise

    def _wait_until_gone(self, slot_name: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while _slot(self.conn, slot_name) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _snapshot_into(self, result: PumpResult) -> None:
        with psycopg.connect(_conninfo(self.settings, replication="database"),
                             autocommit=True) as repl:
            pg, temp = repl.pgconn, self.target.snapshot_slot
            _exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ")
            _exec(pg, f"CREATE_REPLICATION_SLOT {temp} TEMPORARY LOGICAL pgoutput "
                      "(SNAPSHOT 'use')")
            found = _exec(pg, "SELECT restart_lsn::text, now()::text FROM pg_replication_slots "
                              f"WHERE slot_name = '{temp}'")
            lsn = pgoutput.lsn_to_int(found.get_value(0, 0).decode())
            ts_ms = pgoutput.timestamptz_to_epoch_ms(found.get_value(0, 1).decode())
            _exec(pg, f"DECLARE cdc_snapshot NO SCROLL CURSOR FOR SELECT * FROM "
                      f"{self.target.table} ORDER BY user_id COLLATE \"C\"")
            while (batch := _exec(pg, "FETCH 2000 FROM cdc_snapshot")).ntuples:
                columns = [(batch.fname(j).decode(), batch.ftype(j)) for j in range(batch.nfields)]
                for i in range(batch.ntuples):
                    values = [None if batch.get_value(i, j) is None
                              else batch.get_value(i, j).decode() for j in range(batch.nfields)]
                    row = project(columns, values, self.fields)
                    self._emit(change_record("r", None, row, db=self.conn.info.dbname,
                                             schema=self.target.schema, table=self.target.name,
                                             lsn=lsn, tx_id=None, ts_ms=ts_ms), result)
                    result.snapshot_rows += 1
            self.producer.flush()  # durable before the permanent slot exists
            _exec(pg, f"SELECT pg_copy_logical_replication_slot('{temp}', "
                      f"'{self.target.slot}', false)")
            _exec(pg, "COMMIT")

    def _changes(self, result: PumpResult, max_changes: int) -> None:
        rows = self.conn.execute(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
            "'proto_version', '1', 'publication_names', %s, 'messages', 'true')",
            (self.target.slot, max_changes, self.target.publication)).fetchall()
        self.decoder.last_commit, before = None, self.decoder.transactions
        for lsn_text, data in rows:
            for record in self.decoder.feed(pgoutput.lsn_to_int(lsn_text), data):
                self._emit(record, result)
                result.changes += 1
        result.transactions = self.decoder.transactions - before
        if self.decoder.last_commit is None:
            slot = cast("tuple[Any, ...]", _slot(self.conn, self.target.slot))  # it exists
            result.last_lsn = pgoutput.lsn_to_int(slot[4])
            self._heartbeat_if_lagging()
            return
        self.producer.flush()  # durable first; a crash before the advance means a replay
        result.last_lsn = self.decoder.last_commit.end_lsn
        _advance(self.conn, self.target.slot, result.last_lsn)

    def _heartbeat_if_lagging(self) -> None:
        """pgoutput skips transactions without changes of the table, so a quiet table in a busy
        database never gives the slot a commit to advance to, and WAL piles up. Past a
        threshold, a transactional logical message gives the next poll one (as Debezium's
        heartbeat does)."""
        behind = _one_row(self.conn.execute(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s", (self.target.slot,)))[0]
        if behind is not None and behind >= self.heartbeat_bytes:
            self.conn.execute("SELECT pg_logical_emit_message(true, %s, %s)",
                              (HEARTBEAT_PREFIX, self.target.slot))


def _advance(conn: psycopg.Connection, slot: str, lsn: int) -> None:
    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                 (slot, pgoutput.int_to_lsn(lsn)))


# --- entry points ---------------------------------------------------------------------------


def pump_once(settings: Settings, target: CdcTarget = PROFILES, *, max_changes: int = 10_000,
              producer: EventProducer | None = None,
              heartbeat_bytes: int = HEARTBEAT_BYTES) -> PumpResult:
    """Set up if needed, then write at most about ``max_changes`` messages' worth of changes
    (the slot stops at a transaction boundary) and advance the slot past them."""
    with Pump(settings, target, producer, heartbeat_bytes) as pump:
        return pump.run_once(max_changes)


def follow(settings: Settings, target: CdcTarget = PROFILES, *, max_changes: int = 10_000,
           poll_interval_s: float = 1.0, stop: Callable[[PumpResult], bool] | None = None,
           on_batch: Callable[[PumpResult], None] | None = None,
           sleep: Callable[[float], None] = time.sleep,
           heartbeat_bytes: int = HEARTBEAT_BYTES) -> PumpResult:
    """Pump until ``stop(batch)`` says so (or the caller interrupts); sleeps only when a poll
    found nothing. Returns the totals."""
    total = PumpResult()
    with Pump(settings, target, heartbeat_bytes=heartbeat_bytes) as pump:
        while True:
            batch = pump.run_once(max_changes)
            total.add(batch)
            if on_batch is not None:
                on_batch(batch)
            if stop is not None and stop(batch):
                return total
            if _idle(batch):
                sleep(poll_interval_s)


def _idle(batch: PumpResult) -> bool:
    """Nothing for the stream (a heartbeat-only transaction counts as nothing)."""
    return batch.changes == 0 and batch.snapshot_rows == 0


def stop_when_idle(polls: int) -> Callable[[PumpResult], bool]:
    """A ``follow`` stop condition: true after ``polls`` polls in a row found nothing."""
    idle = 0

    def stop(batch: PumpResult) -> bool:
        nonlocal idle
        idle = idle + 1 if _idle(batch) else 0
        return idle >= polls

    return stop


def status(settings: Settings, target: CdcTarget = PROFILES) -> dict:
    """Whether the slot and publication exist, where the slot is, and the WAL it holds."""
    with _connect(settings) as conn:
        slot = _slot(conn, target.slot)
        publication = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                                   (target.publication,)).fetchone() is not None
        held = None
        if slot is not None:
            held = _one_row(conn.execute(
                "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM "
                "pg_replication_slots WHERE slot_name = %s", (target.slot,)))[0]
    return {"slot": target.slot, "slot_exists": slot is not None,
            "publication": target.publication, "publication_exists": publication,
            "active_pid": slot[2] if slot else None,
            "confirmed_lsn": slot[4] if slot else None, "wal_held_bytes": held}


def reset(settings: Settings, target: CdcTarget = PROFILES) -> list[str]:
    """Drops the slot and the publication (not the table); the next pump snapshots again."""
    done = []
    with _connect(settings) as conn:
        slot = _slot(conn, target.slot)
        if slot is not None:
            if slot[2] is not None:
                raise CdcError(f"slot {target.slot} is in use by pid {slot[2]}: stop the pump")
            conn.execute("SELECT pg_drop_replication_slot(%s)", (target.slot,))
            done.append(f"dropped slot {target.slot}")
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                        (target.publication,)).fetchone():
            conn.execute(f"DROP PUBLICATION {target.publication}")
            done.append(f"dropped publication {target.publication}")
    return done or ["nothing to drop"]

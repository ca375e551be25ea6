"""The dead-letter replay ledger: which of a stream's dead letters were produced again.

It lives in the shared operational store (``mercury.ops.state``, table
``<ops schema>.dlq_replay_ledger``, one row per event log, stream and dead-letter id), so a
retry on any Airflow worker finds what an earlier attempt replayed. A replay holds the
stream's lock from reading the ledger to its last append: a second replay of the stream waits,
then finds everything the first produced already recorded.

Dead-letter ids are derived from log positions, which a wiped and refilled local log reuses:
rows are therefore scoped by the log's id, a random id kept in ``<root>/_log_id`` (Flink's
file source skips ``_`` names), which goes with the log. Kafka's offsets are not reused.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from mercury.config import FileEventLogConfig
from mercury.ops import state

if TYPE_CHECKING:
    from pathlib import Path

    from psycopg import Connection

    from mercury.config import Settings

_TABLE = "dlq_replay_ledger"
_COLUMNS = ("dlq_id", "event_id", "rule", "position", "replayed_at")


class Ledger:
    """One stream's ledger on an open connection (``open_ledger``)."""

    def __init__(self, conn: Connection, settings: Settings, stream: str, log_id: str):
        self.conn, self.settings, self.stream, self.log_id = conn, settings, stream, log_id

    def replayed_ids(self) -> set[str]:
        from psycopg import sql

        query = sql.SQL("SELECT dlq_id FROM {} WHERE log_id = %s AND stream = %s").format(
            state.table(self.settings, _TABLE))
        return {row[0] for row in self.conn.execute(query, (self.log_id, self.stream))}

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Record entries (``dlq_id``, ``event_id``, ``rule``, ``position``, ``replayed_at``
        in epoch ms) in one transaction. One already recorded is left as it was."""
        from psycopg import sql

        query = sql.SQL("INSERT INTO {} (log_id, stream, {}) VALUES (%s, %s, {}) "
                        "ON CONFLICT (log_id, stream, dlq_id) DO NOTHING").format(
            state.table(self.settings, _TABLE), sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() for _ in _COLUMNS))
        rows = [(self.log_id, self.stream, *(entry.get(c) for c in _COLUMNS[:-1]),
                 datetime.fromtimestamp(entry["replayed_at"] / 1000, UTC)) for entry in entries]
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(query, rows)


@contextmanager
def open_ledger(settings: Settings, stream: str, *, writable: bool,
                on_wait: Callable[[], None] | None = None) -> Iterator[Ledger]:
    """The stream's ledger; a ``writable`` one holds the stream's replay lock until the block
    ends (``on_wait`` is called if another replay holds it first). Raises
    ``state.LockWaitTimeout`` when that replay does not finish within
    ``ops_state.lock_wait_s``."""
    with state.connect(settings) as conn:
        ledger = Ledger(conn, settings, stream, log_id(settings, create=writable))
        if not writable:
            yield ledger
            return
        with state.held(conn, settings, "replay", stream, on_wait):
            _import_file_ledger(ledger)
            yield ledger


def entries(settings: Settings, stream: str) -> list[dict[str, Any]]:
    """The stream's ledger in the order it was written (``replayed_at`` in epoch ms)."""
    from psycopg import sql
    from psycopg.rows import dict_row

    query = sql.SQL("SELECT {} FROM {} WHERE log_id = %s AND stream = %s ORDER BY seq").format(
        sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), state.table(settings, _TABLE))
    with state.connect(settings) as conn:
        found = conn.cursor(row_factory=dict_row).execute(
            query, (log_id(settings, create=False), stream)).fetchall()
    return [{**row, "replayed_at": int(row["replayed_at"].timestamp() * 1000)} for row in found]


def log_id(settings: Settings, *, create: bool) -> str:
    """The id of the event log the dead letters' positions refer to (module doc). A local log
    without one yet has replayed nothing: ``-`` matches no row unless ``create``."""
    if not isinstance(settings.event_log, FileEventLogConfig):
        return "kafka"
    path = settings.event_log.root / "_log_id"
    if not path.is_file() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        hidden = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        hidden.write_text(uuid.uuid4().hex)
        try:
            os.link(hidden, path)  # fails if another replay made it first: theirs stands
        except FileExistsError:
            pass
        finally:
            hidden.unlink()
    return path.read_text().strip() if path.is_file() else "-"


def _import_file_ledger(ledger: Ledger) -> None:
    """A ledger an earlier release kept on a worker's disk, moved into the store once (the file
    is renamed ``.imported``; a torn last line is dropped, its record replayed again). Remove
    once no worker has such files."""
    path = _file_ledger_path(ledger.settings, ledger.stream)
    if not path.is_file():
        return
    data = path.read_bytes()
    lines = data[:data.rfind(b"\n") + 1].splitlines()
    ledger.append([orjson.loads(line) for line in lines if line])
    path.rename(path.with_name(f"{path.name}.imported"))


def _file_ledger_path(settings: Settings, stream: str) -> Path:
    if isinstance(settings.event_log, FileEventLogConfig):
        return settings.event_log.root / "_replays" / f"{stream}.jsonl"
    return settings.data_dir / "replays" / f"{stream}.jsonl"

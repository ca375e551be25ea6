"""Audit records: never lost when the service dies, never on the hot path.

A record is appended to this process's **spool** (one ``write`` of one JSON line, a few
microseconds) before the response leaves; a **shipper** thread sends spooled lines to their
stream through the event log (Kafka in production), flushes, and only then records how far it
got. So:

- the response never waits for the event log (Kafka being slow or down costs no latency);
- a process killed at any point leaves its records in the spool, in the page cache, which
  survives the process (not the machine: see docs/SERVING.md for the production volume and
  fsync policy). The next process to start claims spools whose owner is gone and ships
  them;
- a line can be shipped twice (killed between the flush and the progress write), never zero
  times. ``request_id`` is the record's id on the stream and its key in the lake, where the
  loader keeps one row per id: at-least-once delivery, exactly one audit row.

Files, in ``<data_dir>/serving/spool/``: ``<owner>.<segment>.jsonl`` (the lines; a new
segment every ``segment_bytes``), ``<owner>.<segment>.shipped`` (bytes shipped, written
atomically) and ``<owner>.lock`` (flock held while the owner lives). A segment fully shipped
that is no longer written to is deleted.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from mercury.eventlog.base import EventProducer

log = logging.getLogger(__name__)


class AuditSpool:
    def __init__(self, folder: Path, owner: str | None = None,
                 segment_bytes: int = 64 << 20) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.owner = owner or f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self._lock_file = open(self.folder / f"{self.owner}.lock", "w")  # noqa: SIM115
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.segment_bytes = segment_bytes
        self.appended = 0
        self._segment = -1
        self._open_next()

    def _open_next(self) -> None:
        self._segment += 1
        self.path = self.folder / f"{self.owner}.{self._segment:06d}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._written = 0

    def append(self, stream: str, key: str, record: dict[str, Any]) -> None:
        """One line per record, one write call: a line is whole or absent after a kill."""
        line = orjson.dumps({"stream": stream, "key": key, "record": record}) + b"\n"
        os.write(self._fd, line)
        self.appended += 1
        self._written += len(line)
        if self._written >= self.segment_bytes:
            old = self._fd
            self._open_next()  # the shipper finishes the old segment, then deletes it
            os.close(old)

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.owner}.*.jsonl"))

    def close(self) -> None:
        os.close(self._fd)
        self._lock_file.close()


def _shipped_path(spool: Path) -> Path:
    return spool.with_suffix(".shipped")


def _read_progress(spool: Path) -> int:
    try:
        return int(_shipped_path(spool).read_text() or 0)
    except FileNotFoundError:
        return 0


def _write_progress(spool: Path, offset: int) -> None:
    hidden = spool.with_name(f".{spool.stem}.shipped.tmp")
    hidden.write_text(str(offset))
    os.replace(hidden, _shipped_path(spool))


def ship_file(spool: Path, send: Callable[[str, str, dict[str, Any]], None],
              flush: Callable[[], None], max_lines: int = 5_000) -> int:
    """Ship complete lines after the recorded progress; returns how many were shipped."""
    offset = _read_progress(spool)
    if offset >= spool.stat().st_size:
        return 0  # nothing new: the common case, kept to a stat and a small read
    with open(spool, "rb") as src:
        src.seek(offset)
        chunk = src.read(4 << 20)
    shipped, consumed = 0, 0
    for raw in chunk.split(b"\n")[:-1]:  # the part after the last newline is not whole yet
        consumed += len(raw) + 1
        if raw.strip():
            entry = orjson.loads(raw)
            send(entry["stream"], entry["key"], entry["record"])
            shipped += 1
        if shipped >= max_lines:
            break
    if consumed:
        flush()  # durable on the stream first, then the progress: at-least-once
        _write_progress(spool, offset + consumed)
    return shipped


def _claim(folder: Path, owner: str) -> IO[str] | None:
    """The owner's lock file, locked by us, when its owner is gone and no other process is
    shipping its spool; else None."""
    lock = open(folder / f"{owner}.lock", "a")  # noqa: SIM115 - returned to the caller
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


class AuditShipper:
    """Ships this process's spool and any spool whose owner died, every ``interval_s``."""

    def __init__(self, spool: AuditSpool, producer: EventProducer,
                 encode: Callable[[str, dict[str, Any]], bytes],
                 interval_s: float = 1.0, orphans_every_s: float = 10.0) -> None:
        self.spool = spool
        self.producer = producer
        self.encode = encode
        self.interval_s = interval_s
        self.orphans_every_s = orphans_every_s
        self._orphans_checked = float("-inf")  # the first round looks for dead owners
        self.shipped = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self.ship_once()  # what was appended since the last round

    def _send(self, stream: str, key: str, record: dict[str, Any]) -> None:
        self.producer.send(stream, self.encode(stream, record), key=key)

    def ship_once(self) -> int:
        """Ship this process's segments, then those of owners that are gone."""
        folder = self.spool.folder
        shipped = self._ship_segments(self.spool.segments(), current=self.spool.path)
        if time.monotonic() - self._orphans_checked < self.orphans_every_s:
            self.shipped += shipped
            return shipped
        self._orphans_checked = time.monotonic()
        others = {p.name.split(".", 1)[0] for p in folder.glob("*.jsonl")} - {self.spool.owner}
        for owner in sorted(others):
            lock = _claim(folder, owner)
            if lock is None:
                continue  # alive, or another process is shipping it
            with lock:
                shipped += self._ship_segments(sorted(folder.glob(f"{owner}.*.jsonl")))
                (folder / f"{owner}.lock").unlink(missing_ok=True)
            log.info("audit: shipped the spool of %s, which is gone", owner)
        self.shipped += shipped
        return shipped

    def _ship_segments(self, segments: list[Path], current: Path | None = None) -> int:
        shipped = 0
        for segment in segments:
            while n := ship_file(segment, self._send, self.producer.flush):
                shipped += n
            if segment != current and _read_progress(segment) >= segment.stat().st_size:
                segment.unlink()  # finished and no longer written to
                _shipped_path(segment).unlink(missing_ok=True)
        return shipped

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.ship_once()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep spooling; retry next round
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("audit shipping failed (records stay spooled): %s", self.last_error)
                time.sleep(self.interval_s)

    def backlog_bytes(self) -> int:
        return sum(max(0, p.stat().st_size - _read_progress(p))
                   for p in self.spool.folder.glob("*.jsonl"))

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

import base64
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

from mercury.serving.spool_keys import forget_owner_keys

if TYPE_CHECKING:
    from mercury.eventlog.base import EventProducer

log = logging.getLogger(__name__)

# A record larger than this cannot travel (Kafka's default message limit is 1 MB): it is
# quarantined, never left in the spool to block the records behind it.
MAX_LINE_BYTES = 900 * 1024
_READ_BYTES = 4 << 20


class RecordRejected(ValueError):
    """This record cannot be shipped as it is (it breaks its contract, or is too large);
    ``reason`` names why. It goes to quarantine: shipping goes on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SpoolFull(OSError):
    """The spool cannot take a record (disk full, I/O error): refuse the request, do not
    answer it unaudited."""


def quarantine_path(folder: Path, owner: str) -> Path:
    return folder / "quarantine" / f"{owner}.jsonl"


def quarantine_line(path: Path, reason: str, raw: bytes) -> None:
    """Keep a record that cannot be shipped, with why, for a person to look at (mode 0600:
    it holds what the spool holds)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    entry = {"reason": reason, "quarantined_at_ms": int(time.time() * 1000),
             "bytes": len(raw)}
    try:
        entry["line"] = orjson.loads(raw)
    except orjson.JSONDecodeError:
        entry["line_b64"] = base64.b64encode(raw[:MAX_LINE_BYTES]).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        _write_all(fd, orjson.dumps(entry) + b"\n")
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be short: signals, full disks)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError("a write wrote nothing")
        view = view[written:]


class AuditSpool:
    def __init__(self, folder: Path, owner: str | None = None,
                 segment_bytes: int = 64 << 20,
                 check: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.owner = owner or f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self._lock_file = open(self.folder / f"{self.owner}.lock", "w")  # noqa: SIM115
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.segment_bytes = segment_bytes
        self.check = check  # raises RecordRejected for a record that breaks its contract
        self.appended = 0
        self.quarantined = 0
        self._segment = -1
        self._open_next()

    def _open_next(self) -> None:
        self._segment += 1
        self.path = self.folder / f"{self.owner}.{self._segment:06d}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._written = 0

    def append(self, stream: str, key: str, record: dict[str, Any]) -> None:
        """One line per record, written whole before the response leaves. A record that
        breaks its contract or is too large to travel is quarantined (counted), not spooled:
        it would block every record behind it. A spool that cannot be written raises
        ``SpoolFull``."""
        line = orjson.dumps({"stream": stream, "key": key, "record": record}) + b"\n"
        try:
            if self.check is not None:
                self.check(stream, record)
            if len(line) > MAX_LINE_BYTES:
                raise RecordRejected(f"oversized: {len(line)} bytes")
        except RecordRejected as exc:
            self.quarantined += 1
            quarantine_line(quarantine_path(self.folder, self.owner), exc.reason, line)
            log.error("audit record %s quarantined: %s", key, exc.reason)
            return
        try:
            _write_all(self._fd, line)
        except OSError as exc:
            raise SpoolFull(f"the audit spool {self.path} cannot be written: {exc}") from exc
        self.appended += 1
        self._written += len(line)
        if self._written >= self.segment_bytes:
            old = self._fd
            self._open_next()  # the shipper finishes the old segment, then deletes it
            os.close(old)

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.owner}.*.jsonl"))

    def close(self) -> None:
        """After the shipper's last round: fully shipped segments go (they hold user tokens
        and sealed questions, nothing left to ship), and with the last of them the lock and
        the spool keys."""
        os.close(self._fd)
        for segment in self.segments():
            if _read_progress(segment) >= segment.stat().st_size:
                segment.unlink()
                _shipped_path(segment).unlink(missing_ok=True)
        if not self.segments():
            forget_owner_keys(self.folder, self.owner)
            (self.folder / f"{self.owner}.lock").unlink(missing_ok=True)
        self._lock_file.close()


def backlog_bytes(folder: Path) -> int:
    """Bytes spooled in ``folder`` and not yet shipped, whoever the owner."""
    return sum(max(0, p.stat().st_size - _read_progress(p)) for p in folder.glob("*.jsonl"))


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


def _entry(raw: bytes) -> tuple[str, str, dict[str, Any]]:
    entry = orjson.loads(raw)
    stream, key, record = entry["stream"], entry["key"], entry["record"]
    if not (isinstance(stream, str) and isinstance(key, str) and isinstance(record, dict)):
        raise ValueError("not a spool entry")
    return stream, key, record


def ship_file(spool: Path, send: Callable[[str, str, dict[str, Any]], None],
              flush: Callable[[], None], max_lines: int = 5_000,
              quarantine: Callable[[str, bytes], None] | None = None,
              prefetch: Callable[[list[tuple[str, dict[str, Any]]]], None] | None = None
              ) -> int:
    """Ship complete lines after the recorded progress; returns how many were shipped.

    A line that does not decode (torn by a short write on a full disk, say), is too large, or
    whose record is rejected by ``send`` goes to ``quarantine`` with its reason (by default
    ``<spool>.quarantine``) and shipping goes on: one bad line never wedges the rest.
    ``prefetch`` sees the batch's records before the first is sent (one lookup per batch)."""
    if quarantine is None:
        def quarantine(reason: str, raw: bytes) -> None:
            quarantine_line(spool.with_suffix(".quarantine"), reason, raw)
    offset = _read_progress(spool)
    if offset >= spool.stat().st_size:
        return 0  # nothing new: the common case, kept to a stat and a small read
    with open(spool, "rb") as src:
        src.seek(offset)
        chunk = src.read(_READ_BYTES)
    lines = chunk.split(b"\n")[:-1]  # the part after the last newline is not whole yet
    if not lines and len(chunk) == _READ_BYTES:  # one line longer than a whole read
        length = _line_length(spool, offset)
        if length is not None:
            quarantine(f"oversized: {length} bytes", chunk[:MAX_LINE_BYTES])
            _write_progress(spool, offset + length + 1)
        return 0
    batch: list[tuple[bytes, tuple[str, str, dict[str, Any]] | str | None]] = []
    good = 0
    for raw in lines:
        if good >= max_lines:
            break
        if not raw.strip():
            batch.append((raw, None))
        elif len(raw) > MAX_LINE_BYTES:
            batch.append((raw, f"oversized: {len(raw)} bytes"))
        else:
            try:
                batch.append((raw, _entry(raw)))
                good += 1
            except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
                batch.append((raw, "undecodable spool line"))
    if prefetch is not None:
        prefetch([(item[0], item[2]) for _, item in batch if isinstance(item, tuple)])
    shipped, consumed = 0, 0
    for raw, item in batch:
        consumed += len(raw) + 1
        if isinstance(item, str):
            quarantine(item, raw[:MAX_LINE_BYTES])
            continue
        if item is None:
            continue
        try:
            send(*item)
        except RecordRejected as exc:
            quarantine(exc.reason, raw)
            continue
        shipped += 1
    if consumed:
        flush()  # durable on the stream first, then the progress: at-least-once
        _write_progress(spool, offset + consumed)
    return shipped


def _line_length(spool: Path, offset: int) -> int | None:
    """The length of the line at ``offset``, or None while it has no newline yet."""
    with open(spool, "rb") as src:
        src.seek(offset)
        length = 0
        while block := src.read(1 << 20):
            end = block.find(b"\n")
            if end != -1:
                return length + end
            length += len(block)
    return None


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
                 interval_s: float = 1.0, orphans_every_s: float = 10.0,
                 prepare: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
                 max_message_bytes: int = MAX_LINE_BYTES,
                 prefetch: Callable[[list[tuple[str, dict[str, Any]]]], None] | None = None
                 ) -> None:
        self.spool = spool
        self.producer = producer
        self.encode = encode
        # Work that must not run on the request path (the question's redaction, from its
        # ciphertext): done here, on the shipper's thread, before the record is encoded.
        self.prepare = prepare
        self.prefetch = prefetch  # what ``prepare`` needs for a whole batch (users' keys)
        self.max_message_bytes = max_message_bytes
        self.quarantined = 0
        self.interval_s = interval_s
        self.orphans_every_s = orphans_every_s
        self._orphans_checked = float("-inf")  # the first round looks for dead owners
        self.shipped = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        # One round at a time: the last round at shutdown must not interleave with one still
        # running on the thread (both would read the same progress and share one producer).
        self._round = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="audit-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ship what was appended since the last round, after the round in flight (its first
        redaction can take seconds on a busy machine). A round that does not finish within
        ``timeout_s`` (a producer that does not answer) leaves the rest spooled: the next
        process ships it as an orphan's."""
        self._stop.set()
        if not self._round.acquire(timeout=timeout_s):
            log.error("audit: the shipping round did not finish in %.0f s; the rest stays "
                      "spooled for the next process", timeout_s)
            return
        try:
            self._ship_round()
        finally:
            self._round.release()

    def _send(self, stream: str, key: str, record: dict[str, Any]) -> None:
        try:
            if self.prepare is not None:
                record = self.prepare(stream, record)
            payload = self.encode(stream, record)
        except RecordRejected:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # breaks the schema
            raise RecordRejected(f"does not encode: {type(exc).__name__}: {exc}") from exc
        if len(payload) > self.max_message_bytes:
            raise RecordRejected(f"oversized: {len(payload)} bytes encoded")
        self.producer.send(stream, payload, key=key)

    def _quarantine(self, owner: str) -> Callable[[str, bytes], None]:
        def keep(reason: str, raw: bytes) -> None:
            self.quarantined += 1
            quarantine_line(quarantine_path(self.spool.folder, owner), reason, raw)
            log.error("audit line quarantined (%s); shipping goes on", reason)
        return keep

    def ship_once(self) -> int:
        """Ship this process's segments, then those of owners that are gone."""
        with self._round:
            return self._ship_round()

    def _ship_round(self) -> int:
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
                shipped += self._ship_segments(sorted(folder.glob(f"{owner}.*.jsonl")),
                                               owner=owner)
                (folder / f"{owner}.lock").unlink(missing_ok=True)
                if not any(folder.glob(f"{owner}.*.jsonl")):
                    forget_owner_keys(folder, owner)  # its spool keys seal nothing left
            log.info("audit: shipped the spool of %s, which is gone", owner)
        self.shipped += shipped
        return shipped

    def _ship_segments(self, segments: list[Path], current: Path | None = None,
                       owner: str | None = None) -> int:
        shipped = 0
        keep = self._quarantine(owner or self.spool.owner)
        for segment in segments:
            while True:  # until a round moves the progress no further
                before = _read_progress(segment)
                shipped += ship_file(segment, self._send, self.producer.flush, quarantine=keep,
                                     prefetch=self.prefetch)
                if _read_progress(segment) == before:
                    break
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
        return backlog_bytes(self.spool.folder)

    def quarantined_total(self) -> int:
        """Records kept out of the stream by this process (at spooling or shipping)."""
        return self.quarantined + self.spool.quarantined

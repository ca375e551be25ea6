"""The local event log: one folder per stream, newline-delimited JSON files.

A batch is written under a hidden name (``.part-...inprogress``) and renamed into place, so a
reader (Flink's filesystem source, or ``FileEventReader``) never sees a partial file: rename is
atomic within a folder, and Flink's file source skips names starting with ``.`` or ``_``.
File names are ``part-<writer>-<seq>.jsonl``; each writer continues its own sequence, so a
restarted writer never overwrites what it wrote before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

from mercury.eventlog.base import EventConsumer, EventLogError, EventProducer, Message

_PART = re.compile(r"^part-(?P<writer>[A-Za-z0-9_.-]+)-(?P<seq>\d{8})\.jsonl$")
# Part files committed by Flink (dead letters, staged lake files): part-<uuid>-<n>.jsonl from
# the DataStream FileSink (older versions add the subtask index before <n>), and
# part-<uuid>-<subtask>-<n> from the SQL filesystem connector, which has no suffix option.
_FLINK_PART = re.compile(
    r"^part-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(-\d+){1,2}(\.jsonl)?$")
_WRITER_ID = re.compile(r"^[A-Za-z0-9_.]+$")


def stream_dir(root: Path, stream: str) -> Path:
    return Path(root) / stream


class FileEventProducer(EventProducer):
    def __init__(self, root: Path, writer_id: str = "w0", batch_size: int = 5000,
                 fsync: bool = True):
        if not _WRITER_ID.match(writer_id):
            raise EventLogError(f"writer id {writer_id!r} may use only letters, digits, _ and .")
        self.root = Path(root)
        self.writer_id = writer_id
        self.batch_size = batch_size
        self.fsync = fsync
        self._buffers: dict[str, list[bytes]] = {}
        self._next_seq: dict[str, int] = {}
        self._prefix: dict[str, str] = {}  # "stream/file:" of the batch being filled

    def send(self, stream: str, value: bytes, key: str | None = None) -> str:
        if b"\n" in value:
            raise EventLogError(f"{stream}: a payload may not contain a newline")
        buffer = self._buffers.get(stream)
        if buffer is None:
            buffer = self._buffers[stream] = []
            self._prefix[stream] = f"{stream}/{self._file_name(stream)}:"
        buffer.append(value)
        position = f"{self._prefix[stream]}{len(buffer)}"
        if len(buffer) >= self.batch_size:
            self._write(stream)
        return position

    def flush(self) -> None:
        for stream in list(self._buffers):
            if self._buffers[stream]:
                self._write(stream)

    def _file_name(self, stream: str) -> str:
        seq = self._next_seq.get(stream)
        if seq is None:
            seq = self._next_seq[stream] = self._last_seq(stream) + 1
        return f"part-{self.writer_id}-{seq:08d}.jsonl"

    def _last_seq(self, stream: str) -> int:
        folder = stream_dir(self.root, stream)
        if not folder.is_dir():
            return 0
        seqs = [int(m["seq"]) for m in map(_PART.match, os.listdir(folder))
                if m and m["writer"] == self.writer_id]
        return max(seqs, default=0)

    def _write(self, stream: str) -> None:
        folder = stream_dir(self.root, stream)
        folder.mkdir(parents=True, exist_ok=True)
        name = self._file_name(stream)
        hidden = folder / f".{name}.inprogress"
        with open(hidden, "wb") as out:
            out.write(b"\n".join(self._buffers[stream]))
            out.write(b"\n")
            if self.fsync:
                out.flush()
                os.fsync(out.fileno())
        os.rename(hidden, folder / name)
        self._buffers[stream] = []
        self._next_seq[stream] += 1
        self._prefix[stream] = f"{stream}/{self._file_name(stream)}:"


class FileEventReader:
    """Reads whole files of a stream in name order, skipping hidden in-progress files."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def files(self, stream: str) -> list[Path]:
        folder = stream_dir(self.root, stream)
        if not folder.is_dir():
            return []
        return sorted(folder / name for name in os.listdir(folder)
                      if _PART.match(name) or _FLINK_PART.match(name))

    def read(self, stream: str) -> Iterator[Message]:
        for path in self.files(stream):
            yield from self.read_file(stream, path)

    def read_file(self, stream: str, path: Path, skip_lines: int = 0) -> Iterator[Message]:
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                if number <= skip_lines:
                    continue
                yield Message(stream, None, line.rstrip(b"\n"), f"{stream}/{path.name}:{number}")

    def count(self, stream: str) -> int:
        total = 0
        for path in self.files(stream):
            with open(path, "rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return total


class FileEventConsumer(EventConsumer):
    """A consumer group over the local event log.

    Offsets are lines consumed per file, kept in ``<root>/_offsets/<group>/<stream>.json``
    (the leading underscore keeps Flink's file source away from them).
    """

    def __init__(self, root: Path, group: str, streams: list[str]):
        self.reader = FileEventReader(root)
        self.group = group
        self.streams = streams
        self._offsets_dir = Path(root) / "_offsets" / group
        self._committed = {s: self._load(s) for s in streams}
        self._pending = {s: dict(self._committed[s]) for s in streams}

    def _offsets_path(self, stream: str) -> Path:
        return self._offsets_dir / f"{stream}.json"

    def _load(self, stream: str) -> dict[str, int]:
        path = self._offsets_path(stream)
        return orjson.loads(path.read_bytes()) if path.exists() else {}

    def poll(self, max_messages: int = 500, timeout_s: float = 1.0) -> list[Message]:
        return self._next_batch(max_messages, {s: self.reader.files(s) for s in self.streams})

    def read_to_end(self, max_messages: int = 500) -> Iterator[list[Message]]:
        # A file is complete once renamed into place and never changes: the files listed now
        # are the end positions, and files written later wait for the next read.
        ends = {s: self.reader.files(s) for s in self.streams}
        while batch := self._next_batch(max_messages, ends):
            yield batch

    def _next_batch(self, max_messages: int, files: dict[str, list[Path]]) -> list[Message]:
        batch: list[Message] = []
        for stream in self.streams:
            offsets = self._pending[stream]
            for path in files[stream]:
                done = offsets.get(path.name, 0)
                for message in self.reader.read_file(stream, path, skip_lines=done):
                    batch.append(message)
                    offsets[path.name] = offsets.get(path.name, 0) + 1
                    if len(batch) >= max_messages:
                        return batch
        return batch

    def commit(self) -> None:
        self._offsets_dir.mkdir(parents=True, exist_ok=True)
        for stream in self.streams:
            path = self._offsets_path(stream)
            hidden = path.with_name(f".{path.name}.tmp")
            hidden.write_bytes(orjson.dumps(self._pending[stream]))
            os.replace(hidden, path)
            self._committed[stream] = dict(self._pending[stream])


def group_lag(root: Path, group: str, streams: list[str]) -> int:
    """Lines of ``streams`` that ``group`` has not committed."""
    consumer = FileEventConsumer(root, group, streams)
    return sum(consumer.reader.count(s) - sum(consumer._committed[s].values()) for s in streams)

"""A decoder of ``pgoutput`` logical replication messages (protocol version 1).

psycopg 3 does not speak the streaming replication protocol, so CDC reads the slot through
``pg_logical_slot_peek_binary_changes``: one ``bytea`` row per pgoutput message. This module
turns those bytes into small frozen objects and column text into Python values. It is pure (no
I/O) so it is tested on literal bytes. Layouts follow the "Logical Replication Message
Formats" page of the Postgres manual; messages CDC does not need (Origin, Type, Truncate,
logical decoding messages) decode to ``Skipped`` rather than failing, so a newer server that
sends more kinds of messages does not stop the pump.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # pgoutput timestamps count microseconds from here
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DecodeError(ValueError):
    """The bytes are not a pgoutput message this decoder understands."""


class Unchanged:
    """A TOASTed value the update did not touch: pgoutput sends a marker, not the value."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()

# A tuple: one entry per column, None for SQL NULL, UNCHANGED, or the value's text output.
TupleData = tuple[str | None | Unchanged, ...]


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # LSN of the commit record
    commit_ts_us: int  # microseconds since 2000-01-01 UTC
    xid: int

    @property
    def commit_ms(self) -> int:
        return pg_micros_to_epoch_ms(self.commit_ts_us)


@dataclass(frozen=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # end of the commit record: where a consumer that is done resumes
    commit_ts_us: int


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Insert:
    relation_oid: int
    new: TupleData


@dataclass(frozen=True)
class Update:
    relation_oid: int
    old: TupleData | None  # present with REPLICA IDENTITY FULL ('O') or a changed key ('K')
    old_kind: str | None
    new: TupleData


@dataclass(frozen=True)
class Delete:
    relation_oid: int
    old: TupleData
    old_kind: str  # 'O' (whole old row, REPLICA IDENTITY FULL) or 'K' (key columns only)


@dataclass(frozen=True)
class Skipped:
    kind: str  # the message type byte, e.g. 'O' origin, 'Y' type, 'T' truncate, 'M' message


Message = Begin | Commit | Relation | Insert | Update | Delete | Skipped


class _Reader:
    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.at = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise DecodeError(f"message ends at byte {len(self.data)}, needed {self.at + size}")
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return values if len(values) > 1 else values[0]

    def string(self) -> str:
        end = self.data.find(b"\0", self.at)
        if end < 0:
            raise DecodeError(f"unterminated string at byte {self.at}")
        text = self.data[self.at:end].decode("utf-8")
        self.at = end + 1
        return text

    def raw(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise DecodeError(f"value of {size} bytes overruns the message at byte {self.at}")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def tuple_data(self) -> TupleData:
        values: list[str | None | Unchanged] = []
        for _ in range(self.take("!h")):
            kind = self.raw(1)
            if kind == b"n":
                values.append(None)
            elif kind == b"u":
                values.append(UNCHANGED)
            elif kind == b"t":
                values.append(self.raw(self.take("!i")).decode("utf-8"))
            else:  # 'b' (binary) only comes with the 'binary' option, which CDC never sets
                raise DecodeError(f"tuple column kind {kind!r} is not supported")
        return tuple(values)

    def done(self, message: Message) -> Message:
        if self.at != len(self.data):
            raise DecodeError(f"{type(message).__name__}: {len(self.data) - self.at} trailing "
                              "bytes")
        return message


def decode(data: bytes) -> Message:
    """One pgoutput message (one row of ``pg_logical_slot_*_binary_changes``)."""
    if not data:
        raise DecodeError("empty message")
    r = _Reader(data)
    kind = chr(r.take("!B"))
    if kind == "B":
        return r.done(Begin(*r.take("!QqI")))
    if kind == "C":
        return r.done(Commit(*r.take("!BQQq")))
    if kind == "R":
        oid, namespace, name = r.take("!I"), r.string(), r.string()
        identity = chr(r.take("!B"))
        columns = []
        for _ in range(r.take("!h")):
            flags, col_name = r.take("!B"), r.string()
            type_oid, modifier = r.take("!Ii")
            columns.append(Column(col_name, type_oid, modifier, bool(flags & 1)))
        return r.done(Relation(oid, namespace, name, identity, tuple(columns)))
    if kind == "I":
        oid = r.take("!I")
        _expect(r, b"N")
        return r.done(Insert(oid, r.tuple_data()))
    if kind == "U":
        oid = r.take("!I")
        marker = r.raw(1)
        old = old_kind = None
        if marker in (b"K", b"O"):
            old_kind, old = marker.decode(), r.tuple_data()
            marker = r.raw(1)
        if marker != b"N":
            raise DecodeError(f"update: expected new tuple 'N', got {marker!r}")
        return r.done(Update(oid, old, old_kind, r.tuple_data()))
    if kind == "D":
        oid = r.take("!I")
        marker = r.raw(1)
        if marker not in (b"K", b"O"):
            raise DecodeError(f"delete: expected old tuple 'K' or 'O', got {marker!r}")
        return r.done(Delete(oid, r.tuple_data(), marker.decode()))
    return Skipped(kind)


def _expect(r: _Reader, marker: bytes) -> None:
    got = r.raw(1)
    if got != marker:
        raise DecodeError(f"expected {marker!r}, got {got!r}")


# --- values ---------------------------------------------------------------------------------

TEXT_TYPES = {25, 1042, 1043, 19}  # text, bpchar, varchar, name
INT_TYPES = {20, 21, 23}  # int8, int2, int4
JSON_TYPES = {114, 3802}  # json, jsonb
TIMESTAMPTZ = 1184

# Output of timestamptz with DateStyle ISO (the reader sets it, and TimeZone UTC).
_TIMESTAMPTZ = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
                          r"([+-])(\d{2})(?::(\d{2}))?(?::(\d{2}))?$")


def parse_text(type_oid: int, text: str | None):
    """A column's text output as the value the contract wants (timestamps in epoch ms)."""
    if text is None:
        return None
    if type_oid in TEXT_TYPES:
        return text
    if type_oid in INT_TYPES:
        return int(text)
    if type_oid == 16:
        return {"t": True, "f": False}[text]
    if type_oid in JSON_TYPES:
        return orjson.loads(text)
    if type_oid == TIMESTAMPTZ:
        return timestamptz_to_epoch_ms(text)
    return text  # enums, domains over text and anything else keep their text form


def timestamptz_to_epoch_ms(text: str) -> int:
    """Exact integer arithmetic: Postgres keeps microseconds; sub-millisecond digits are
    dropped toward the past (floor), like Debezium's timestamp-millis."""
    m = _TIMESTAMPTZ.match(text)
    if m is None:
        raise DecodeError(f"timestamptz {text!r} is not in ISO DateStyle (or is infinite/BC)")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int((m[7] or "").ljust(6, "0"))
    offset = timedelta(hours=int(m[9]), minutes=int(m[10] or 0), seconds=int(m[11] or 0))
    local = datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)
    moment = local - offset if m[8] == "+" else local + offset
    return (moment - UNIX_EPOCH) // timedelta(milliseconds=1)


def pg_micros_to_epoch_ms(micros: int) -> int:
    return (PG_EPOCH - UNIX_EPOCH) // timedelta(milliseconds=1) + micros // 1000


def lsn_to_int(text: str) -> int:
    """``'16/B374D848'`` -> 97500059720: the form ``source.lsn`` carries."""
    high, _, low = text.partition("/")
    if not low:
        raise DecodeError(f"{text!r} is not an LSN")
    return (int(high, 16) << 32) | int(low, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"

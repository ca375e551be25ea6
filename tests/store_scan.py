"""A scan of everything a run wrote, for given strings (erasure and PII tests).

Every file under the given roots is read the way its format stores text: Parquet and Avro
decoded row by row (their pages are compressed, so a byte search would see nothing), DuckDB
files queried table by table, and any other file searched as bytes. Redis is scanned key by
key, names and values. The result names each place a needle was found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True)
class Hit:
    where: str
    needle: str


def scan_files(roots: Iterable[Path], needles: list[str],
               skip: tuple[str, ...] = ()) -> list[Hit]:
    encoded = [(n, n.encode()) for n in needles]
    return [Hit(where, n) for where, data in file_texts(roots, skip)
            for n, b in encoded if b in data]


def file_texts(roots: Iterable[Path], skip: tuple[str, ...] = ()) -> Iterator[tuple[str, bytes]]:
    """(path, the file's text as its format stores it) for every file under ``roots``."""
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                if not any(part in str(path) for part in skip):
                    yield str(path), _text_of(path)


def _text_of(path: Path) -> bytes:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return orjson.dumps(pq.read_table(path).to_pylist(), default=str)
    if path.suffix == ".avro":
        import fastavro

        with open(path, "rb") as f:
            return orjson.dumps(list(fastavro.reader(f)), default=repr)
    if path.suffix == ".duckdb":
        return _duckdb_text(path)
    return path.read_bytes()


def _duckdb_text(path: Path) -> bytes:
    import duckdb

    out = []
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute("select table_schema, table_name from information_schema.tables "
                             "where table_type = 'BASE TABLE'").fetchall()
        for schema, table in tables:
            rows = con.execute(f'select * from "{schema}"."{table}"').fetchall()
            out.append(orjson.dumps(rows, default=str))
    return b"\n".join(out)


def scan_redis(client, needles: list[str]) -> list[Hit]:
    hits = []
    for key in client.scan_iter(count=5_000):
        kind = client.type(key)
        if kind == b"hash":
            body = orjson.dumps({k.decode(): v.decode(errors="replace")
                                 for k, v in client.hgetall(key).items()})
        elif kind == b"string":
            body = client.get(key) or b""
        elif kind == b"zset":
            body = b" ".join(m for m in client.zrange(key, 0, -1))
        else:
            body = b""
        text = key + b" " + body
        hits += [Hit(f"redis:{key.decode(errors='replace')}", n) for n in needles
                 if n.encode() in text]
    return hits

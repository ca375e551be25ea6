"""Erasure in line files: the local event log (and the raw archive it stands for) and the
streaming job's staged and compacted part files.

Each file holding a subject is rewritten without the subject's lines, under a hidden name then
renamed (readers never see half a file). A consumer group that had read part of a rewritten
file keeps its place: its line count is recomputed over the kept lines, so it neither re-reads
nor skips anyone else's records. A line is the subject's when it quotes one of their ids as a
JSON string, directly or inside a payload kept as text or base64 (dead letters).

In production the event log is Kafka: topics cannot be edited, their retention (3 to 30 days,
``mercury.contracts.registry``) is shorter than the 30-day deadline; this step then runs over
the raw archive on S3 (the same files).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import orjson

from mercury.privacy.erasure.evidence import Removal
from mercury.privacy.erasure.subject import Subject


def erase_line_files(folder: Path, subjects: list[Subject], store: str,
                     offsets_root: Path | None = None) -> list[Removal]:
    """Every file under ``folder`` (one removal per sub-folder that had lines removed)."""
    needles = [n for s in subjects for n in s.json_needles()]
    escaped = [n.replace(b'"', b'\\"') for n in needles]  # the id inside a JSON string
    decoded = needles + [n for s in subjects for n in s.avro_needles()]
    removed: dict[str, int] = {}
    for path in sorted(_files(folder)):
        data = path.read_bytes()
        if not any(n in data for n in (*needles, *escaped)) and b"raw_payload_base64" not in data:
            continue
        lines = data.splitlines(keepends=True)
        keep = [not _quotes(line, needles, escaped, decoded) for line in lines]
        if all(keep):
            continue
        _rewrite(path, [line for line, k in zip(lines, keep, strict=True) if k])
        if offsets_root is not None:
            _shift_offsets(offsets_root, path, keep)
        where = str(path.parent.relative_to(folder)) if path.parent != folder else "."
        removed[where] = removed.get(where, 0) + keep.count(False)
    return [Removal(store, f"{folder.name}/{where}", count) for where, count in removed.items()]


def _files(folder: Path):
    """Committed files, archived ones included (``_compacted``); not the hidden files being
    written, nor the consumers' offsets (file names and counts only)."""
    if not folder.exists():
        return
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "_offsets"]
        yield from (Path(root) / n for n in names if not n.startswith("."))


def _quotes(line: bytes, needles: list[bytes], escaped: list[bytes], decoded: list[bytes]) -> bool:
    if any(n in line for n in (*needles, *escaped)):
        return True
    if b"raw_payload_base64" not in line:
        return False
    try:
        blob = base64.b64decode(orjson.loads(line).get("raw_payload_base64") or "")
    except (orjson.JSONDecodeError, ValueError, AttributeError):
        return False
    return any(n in blob for n in decoded)


def _rewrite(path: Path, lines: list[bytes]) -> None:
    hidden = path.with_name(f".{path.name}.erasing")
    hidden.write_bytes(b"".join(lines))
    os.replace(hidden, path)


def _shift_offsets(offsets_root: Path, path: Path, keep: list[bool]) -> None:
    """File-log groups count lines read per file (``<root>/_offsets/<group>/<stream>.json``)."""
    stream = path.parent.name
    for offsets_file in offsets_root.glob(f"*/{stream}.json"):
        offsets = orjson.loads(offsets_file.read_bytes())
        done = offsets.get(path.name)
        if done is None:
            continue
        offsets[path.name] = sum(keep[:done])
        hidden = offsets_file.with_name(f".{offsets_file.name}.tmp")
        hidden.write_bytes(orjson.dumps(offsets))
        os.replace(hidden, offsets_file)

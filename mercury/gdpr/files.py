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
from collections import Counter
from pathlib import Path

import orjson

from mercury.gdpr.evidence import Removal
from mercury.gdpr.subject import Subject


def erase_line_files(folder: Path, subjects: list[Subject], store: str,
                     offsets_root: Path | None = None) -> list[Removal]:
    """Every file under ``folder``: a removal per subject and sub-folder that lost lines."""
    finders = [_Finder(s) for s in subjects]
    quick = [n for f in finders for n in f.text]
    removed: Counter[tuple[str, str]] = Counter()
    for path in sorted(_files(folder)):
        data = path.read_bytes()
        if not any(n in data for n in quick) and b"raw_payload_base64" not in data:
            continue
        lines = data.splitlines(keepends=True)
        owners = [next((f.ticket for f in finders if f.quoted_in(line)), None) for line in lines]
        if not any(owners):
            continue
        keep = [owner is None for owner in owners]
        _rewrite(path, [line for line, k in zip(lines, keep, strict=True) if k])
        if offsets_root is not None:
            _shift_offsets(offsets_root, path, keep)
        where = str(path.parent.relative_to(folder)) if path.parent != folder else "."
        removed.update((owner, where) for owner in owners if owner)
    out = []
    for who in subjects:  # each subject: its folders that lost lines, or one "checked: 0"
        mine = sorted((where, n) for (ticket, where), n in removed.items() if ticket == who.ticket)
        out += [Removal(who.ticket, store, f"{folder.name}/{where}", n) for where, n in mine] \
            or [Removal(who.ticket, store, folder.name, 0)]
    return out


class _Finder:
    """One subject's ids as a line may hold them: a JSON string, the same inside a JSON
    string (escaped quotes), or, in a dead letter's base64 payload, JSON or Avro bytes."""

    def __init__(self, who: Subject) -> None:
        self.ticket = who.ticket
        plain = list(who.json_needles())
        self.text = plain + [n.replace(b'"', b'\\"') for n in plain]
        self.decoded = plain + list(who.avro_needles())

    def quoted_in(self, line: bytes) -> bool:
        if any(n in line for n in self.text):
            return True
        if b"raw_payload_base64" not in line:
            return False
        try:
            blob = base64.b64decode(orjson.loads(line).get("raw_payload_base64") or "")
        except (orjson.JSONDecodeError, ValueError, AttributeError):
            return False
        return any(n in blob for n in self.decoded)


def _files(folder: Path):
    """Committed files, archived ones included (``_compacted``); not the hidden files being
    written, nor the consumers' offsets (file names and counts only)."""
    if not folder.exists():
        return
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "_offsets"]
        yield from (Path(root) / n for n in names if not n.startswith("."))


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

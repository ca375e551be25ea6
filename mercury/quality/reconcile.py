"""Proving nothing was lost: dead letters against the generator's manifest, kind by kind.

The manifest records the log position of every record it broke; each must come back as
exactly one dead letter at that position with the matching rule, and no valid record may be
dead-lettered.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson

from mercury.eventlog.file_log import FileEventReader


@dataclass(frozen=True)
class Reconciliation:
    expected: dict[str, int]      # "stream/rule" -> records the manifest says were broken
    found: dict[str, int]         # "stream/rule" -> dead letters
    missing: list[str]            # broken records with no dead letter ("stream/rule@position")
    unexpected: list[str]         # dead letters the manifest does not account for
    repeated: list[str]           # positions dead-lettered more than once

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.repeated)


def dead_letters(event_log_root: Path, stream: str) -> list[dict]:
    reader = FileEventReader(event_log_root)
    return [orjson.loads(m.value) for m in reader.read(f"{stream}.dlq")]


def reconcile(manifest: dict, event_log_root: Path, streams: list[str]) -> Reconciliation:
    expected_at: dict[str, str] = {}
    for kind, notes in manifest["malformed"].items():
        for note in notes:
            if note["stream"] in streams:
                expected_at[note["position"]] = f"{note['stream']}/{kind}"
    seen: dict[str, list[str]] = defaultdict(list)
    for stream in streams:
        for letter in dead_letters(event_log_root, stream):
            seen[letter["source_position"]].append(f"{stream}/{letter['rule']}")
    missing = [f"{label}@{pos}" for pos, label in sorted(expected_at.items())
               if label not in seen.get(pos, [])]
    unexpected = [f"{labels[0]}@{pos}" for pos, labels in sorted(seen.items())
                  if expected_at.get(pos) != labels[0]]
    repeated = [pos for pos, labels in sorted(seen.items()) if len(labels) > 1]
    return Reconciliation(_tally(expected_at.values()),
                          _tally(label for labels in seen.values() for label in labels),
                          missing, unexpected, repeated)


def _tally(labels) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for label in labels:
        out[label] += 1
    return dict(sorted(out.items()))

"""The account of one generator run: what was produced and every anomaly injected, with the
event ids and log positions involved, so tests can prove that nothing was lost."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

import orjson


class Manifest:
    def __init__(self, knobs: dict):
        self.knobs = knobs
        self.generated: Counter = Counter()     # distinct events created, per stream
        self.lines: Counter = Counter()         # lines written, per stream
        self.malformed: dict[str, list[dict]] = defaultdict(list)
        self.duplicates: list[dict] = []
        self.late: list[dict] = []
        self.out_of_order: list[dict] = []
        self.evolved: list[dict] = []
        self.profile_updates = 0
        self.profiles = 0
        self.documents: Counter = Counter()

    def counts(self) -> dict:
        return {
            "generated": dict(sorted(self.generated.items())),
            "lines": dict(sorted(self.lines.items())),
            "malformed": {kind: len(v) for kind, v in sorted(self.malformed.items())},
            "duplicates": len(self.duplicates),
            "late": len(self.late),
            "out_of_order": len(self.out_of_order),
            "evolved": len(self.evolved),
            "profiles": self.profiles,
            "profile_updates": self.profile_updates,
            "document_changes": dict(sorted(self.documents.items())),
        }

    def as_dict(self) -> dict:
        return {
            "knobs": self.knobs,
            "counts": self.counts(),
            "malformed": {kind: v for kind, v in sorted(self.malformed.items())},
            "duplicates": self.duplicates,
            "late": self.late,
            "out_of_order": self.out_of_order,
            "evolved": self.evolved,
        }

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        hidden = path.with_name(f".{path.name}.tmp")
        hidden.write_bytes(orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2))
        os.replace(hidden, path)
        return path


def load(path: Path) -> dict:
    return orjson.loads(Path(path).read_bytes())

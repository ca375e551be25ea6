"""Loading the versioned Avro schemas shipped in ``mercury/contracts/schemas/<subject>/vN.avsc``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

SCHEMA_PACKAGE = "mercury.contracts"


class UnknownSchema(KeyError):
    pass


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    schema: dict[str, Any]  # the parsed .avsc

    @property
    def schema_id(self) -> int:
        """A stable id for the Confluent wire format, derived from the schema's content.

        Production ids come from the Schema Registry; locally the id is the first 31 bits of
        the SHA-256 of the canonical JSON, so it never changes unless the schema does.
        """
        return int.from_bytes(hashlib.sha256(self.canonical().encode()).digest()[:4], "big") >> 1

    def canonical(self) -> str:
        return json.dumps(self.schema, sort_keys=True, separators=(",", ":"))


def _schema_root() -> Traversable:
    return resources.files(SCHEMA_PACKAGE).joinpath("schemas")


@cache
def subjects() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in _schema_root().iterdir() if p.is_dir()
                        and not p.name.startswith(("_", "."))))


@cache
def versions(subject: str) -> tuple[int, ...]:
    folder = _schema_root().joinpath(subject)
    if not folder.is_dir():
        raise UnknownSchema(f"no schema subject {subject!r}; known: {', '.join(subjects())}")
    found = sorted(int(p.name[1:-5]) for p in folder.iterdir()
                   if p.name.startswith("v") and p.name.endswith(".avsc"))
    if found != list(range(1, len(found) + 1)):
        raise UnknownSchema(f"{subject}: versions must be v1..vN with no gaps, found {found}")
    return tuple(found)


@cache
def load(subject: str, version: int | None = None) -> SchemaVersion:
    """The schema of ``subject`` at ``version`` (the latest when omitted)."""
    known = versions(subject)
    version = known[-1] if version is None else version
    if version not in known:
        raise UnknownSchema(f"{subject} has no version {version}; known: {list(known)}")
    text = _schema_root().joinpath(subject, f"v{version}.avsc").read_text()
    return SchemaVersion(subject, version, json.loads(text))


def by_id(schema_id: int) -> SchemaVersion:
    for subject in subjects():
        for version in versions(subject):
            candidate = load(subject, version)
            if candidate.schema_id == schema_id:
                return candidate
    raise UnknownSchema(f"no schema with id {schema_id}")

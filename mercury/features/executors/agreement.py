"""Holding an online store to the reference executor: every entity, every feature.

Used by the exactness tests and benchmarks: replay the same arrivals through the oracle, read
each entity's hashes from the store, and compare values at the given as-of times (which must
be at or after the last arrival: see ``mercury.features.reader``). Counts and lists must be
equal; floating-point sums may differ by summation order only (1e-9 relative).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from mercury.features.executors.reference import reference_values
from mercury.features.reader import decode
from mercury.online import layout

if TYPE_CHECKING:
    from mercury.eventlog.base import Message
    from mercury.features.definition.dsl import FeatureSet
    from mercury.online.store import OnlineStore

T = TypeVar("T")


class LogReader(Protocol):
    """What ``arrivals_from_log`` reads (``mercury.eventlog.file_log.FileEventReader``)."""

    def read(self, stream: str) -> Iterable[Message]: ...

RELATIVE_TOLERANCE = 1e-9


@dataclass
class Report:
    entities: int = 0
    values: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self, limit: int = 10) -> str:
        head = f"{self.entities} entity-sets, {self.values} values, " \
               f"{len(self.mismatches)} mismatches"
        return "\n".join([head, *(f"  {m}" for m in self.mismatches[:limit])])


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def compare(feature_sets: Sequence[FeatureSet], store: OnlineStore,
            arrivals: Iterable[tuple[str, bytes]], as_of_times: Iterable[int],
            batch: int = 500) -> Report:
    arrivals = list(arrivals)
    report = Report()
    for as_of in as_of_times:
        expected = reference_values(feature_sets, arrivals, as_of)
        by_ref = {fs.ref: fs for fs in feature_sets}
        keys = sorted(expected)
        for chunk in _chunks(keys, batch):
            hashes = store.read([layout.entity_key(by_ref[ref], entity) for ref, entity in chunk])
            for (ref, entity), fields in zip(chunk, hashes, strict=True):
                actual = decode(by_ref[ref], fields, as_of)
                report.entities += 1
                for name, want in expected[(ref, entity)].items():
                    report.values += 1
                    if not same(actual.get(name), want):
                        report.mismatches.append(
                            f"as_of={as_of} {ref} {entity} {name}: store={actual.get(name)!r} "
                            f"reference={want!r}")
    return report


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def arrivals_from_log(reader: LogReader, streams: Iterable[str]) -> list[tuple[str, bytes]]:
    """Every line of the streams, in each stream's log order (its arrival order)."""
    return [(stream, message.value) for stream in streams for message in reader.read(stream)]


def last_arrival(arrivals: Iterable[tuple[str, bytes]]) -> int:
    """The newest ``ingest_ts`` among the parseable payloads: the earliest fair as-of time."""
    newest = 0
    for _, payload in arrivals:
        try:
            newest = max(newest, int(orjson.loads(payload).get("ingest_ts") or 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            continue  # malformed: the oracle ignores it too
    return newest

"""The streaming executor's logic, independent of the engine that runs it.

A streaming engine (the PyFlink job; or plain Python in tests and warm starts) does three
things per valid record, and this module holds all three:

1. ``route``: which entity keys the record updates (``u:<user_id>`` ...), one per entity;
   the engine partitions by that key.
2. ``process`` (per key, with keyed state): drop duplicates by event id, fold the event into
   each feature set's state, and return the online-store writes.
3. The engine applies the writes (``OnlineStore.write``) before it checkpoints.

State is reached through ``StateAccess`` so the same code runs on Flink ValueStates or dicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from mercury.features import dedup, incremental
from mercury.features.events import normalise


class StateAccess(Protocol):
    def get(self, name: str): ...
    def put(self, name: str, value) -> None: ...


@dataclass
class Outcome:
    writes: list = field(default_factory=list)
    duplicate: bool = False


def seen_state_name(stream: str) -> str:
    return f"seen:{stream}"


def set_state_name(feature_set) -> str:
    return f"set:{feature_set.ref}"


class OnlineExecutor:
    def __init__(self, feature_sets: Iterable):
        self.feature_sets = tuple(feature_sets)
        self._by_stream: dict[str, list] = {}
        for fs in self.feature_sets:
            self._by_stream.setdefault(fs.source.stream, []).append(fs)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._by_stream)

    def state_names(self) -> list[str]:
        return ([seen_state_name(s) for s in self._by_stream]
                + [set_state_name(fs) for fs in self.feature_sets])

    def route(self, stream: str, record: dict) -> list[tuple[str, int]]:
        """(key, event time) for each entity this record updates; the key is
        ``<entity tag>:<entity id>``, the partitioning key of the keyed state."""
        routes: dict[str, int] = {}
        for fs in self._by_stream.get(stream, ()):
            event = normalise(fs, record)
            if event is not None:
                routes.setdefault(f"{fs.entity.tag}:{event.entity_id}", event.event_ts)
        return list(routes.items())

    def process(self, key: str, stream: str, record: dict, state: StateAccess,
                now_ms: int | None = None) -> Outcome:
        """``now_ms`` is the dedup clock (see ``mercury.features.dedup``): the engine's
        processing time; by default the event's arrival time."""
        tag, _, entity_id = key.partition(":")
        outcome = Outcome()
        seen = None
        for fs in self._by_stream.get(stream, ()):
            if fs.entity.tag != tag:
                continue
            event = normalise(fs, record)
            if event is None or event.entity_id != entity_id:
                continue
            if seen is None:  # one dedup decision per record, before any set sees it
                seen = state.get(seen_state_name(stream)) or dedup.new_seen()
                if dedup.seen_before(seen, event.event_id,
                                     event.arrival_ts if now_ms is None else now_ms):
                    outcome.duplicate = True
                    return outcome
                state.put(seen_state_name(stream), seen)
            set_state = state.get(set_state_name(fs)) or incremental.new_state()
            touched = incremental.apply(fs, set_state, event)
            state.put(set_state_name(fs), set_state)
            if touched:
                outcome.writes.append(incremental.render(fs, set_state, touched, entity_id))
        return outcome


class DictState:
    """StateAccess over a plain dict: one per key, for tests and pure-Python runs."""

    def __init__(self):
        self.values: dict = {}

    def get(self, name: str):
        return self.values.get(name)

    def put(self, name: str, value) -> None:
        self.values[name] = value

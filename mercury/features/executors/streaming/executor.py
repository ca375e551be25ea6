"""The streaming executor's logic, independent of the engine that runs it.

A streaming engine (the PyFlink job; or plain Python in tests and warm starts) does three
things per valid record, and this module holds all three:

1. ``route``: which entity keys the record updates (``u:<user_id>`` ...), one per entity;
   the engine partitions by that key.
2. ``process`` (per key, with keyed state): drop duplicates by event id, fold the event into
   each feature set's state, and return the online-store writes.
3. The engine applies the writes (``OnlineStore.write``) before it checkpoints.

State is reached through ``StateAccess`` so the same code runs on Flink ValueStates or dicts.

A version can join a running job warm (``seams``, see ``mercury.features.lifecycle.warm_start``):
its backfill folded every record that arrived at or before a cut T; here that version skips those
records and, on the first touch of an entity whose state for it is empty, starts from the backfilled
state instead of an empty one. Each record is on exactly one side of T. Dedup stays one decision per
record for all versions of a stream (one ``seen:<stream>`` per key), so a retry after T of an event
before T is dropped for the new version too, as long as the job runs on with its state (a restore
from a checkpoint or savepoint). A job started without that state has forgotten the ids seen before
T: a retry within the dedup horizon after T would count again in every version (the backfill already
counted its first arrival). Deploy a warm-started version by restarting the job from a savepoint
whose read position is covered by T. """

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mercury.features.executors.events import normalise
from mercury.features.executors.streaming import dedup, incremental

if TYPE_CHECKING:
    from mercury.features.definition.dsl import FeatureSet
    from mercury.online.store import KeyWrite


class StateAccess(Protocol):
    """Keyed state by name: a ``dedup.Seen`` or an ``incremental.SetState``, None when empty."""

    def get(self, name: str) -> Any: ...
    def put(self, name: str, value: Any) -> None: ...


@dataclass
class Outcome:
    writes: list[KeyWrite] = field(default_factory=list)
    duplicate: bool = False


@dataclass(frozen=True)
class Seam:
    """Where a warm-started version takes over from its backfill: records that arrived at or
    before ``cut_ms`` are the backfill's; ``load(entity_id)`` gives the backfilled state of an
    entity (None when it had no event by the cut)."""
    cut_ms: int
    load: Callable[[str], incremental.SetState | None]


def seen_state_name(stream: str) -> str:
    return f"seen:{stream}"


def set_state_name(feature_set: FeatureSet) -> str:
    return f"set:{feature_set.ref}"


class OnlineExecutor:
    def __init__(self, feature_sets: Iterable[FeatureSet],
                 seams: Mapping[str, Seam] | None = None) -> None:
        """``seams``: by set ref (``spending.v2``), for versions that start warm."""
        self.feature_sets = tuple(feature_sets)
        self.seams = dict(seams or {})
        unknown = sorted(set(self.seams) - {fs.ref for fs in self.feature_sets})
        if unknown:
            raise ValueError(f"seams for sets the executor does not run: {unknown}")
        self._by_stream: dict[str, list[FeatureSet]] = {}
        for fs in self.feature_sets:
            self._by_stream.setdefault(fs.source.stream, []).append(fs)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._by_stream)

    def state_names(self) -> list[str]:
        return ([seen_state_name(s) for s in self._by_stream]
                + [set_state_name(fs) for fs in self.feature_sets])

    def route(self, stream: str, record: dict[str, Any]) -> list[tuple[str, int]]:
        """(key, event time) for each entity this record updates; the key is
        ``<entity tag>:<entity id>``, the partitioning key of the keyed state."""
        routes: dict[str, int] = {}
        for fs in self._by_stream.get(stream, ()):
            event = normalise(fs, record)
            if event is not None:
                routes.setdefault(f"{fs.entity.tag}:{event.entity_id}", event.event_ts)
        return list(routes.items())

    def process(self, key: str, stream: str, record: dict[str, Any], state: StateAccess,
                now_ms: int | None = None) -> Outcome:
        """``now_ms`` is the dedup clock (see ``mercury.features.executors.streaming.dedup``):
        the engine's processing time; by default the event's arrival time."""
        tag, _, entity_id = key.partition(":")
        outcome = Outcome()
        seen: dedup.Seen | None = None
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
            seam = self.seams.get(fs.ref)
            if seam is not None and event.arrival_ts <= seam.cut_ms:
                continue  # counted by the backfill
            set_state: incremental.SetState | None = state.get(set_state_name(fs))
            warmed = False
            if set_state is None and seam is not None:
                set_state = seam.load(entity_id)
                warmed = set_state is not None
            if set_state is None:
                set_state = incremental.new_state()
            touched = incremental.apply(fs, set_state, event)
            state.put(set_state_name(fs), set_state)
            if warmed:  # every field, whatever became of the backfill's write meanwhile
                whole = incremental.Touched(set(set_state["tiles"]), set(set_state["items"]),
                                            set(set_state["latest"]), touched.pruned)
                outcome.writes.append(incremental.render(fs, set_state, whole, entity_id))
            elif touched:
                outcome.writes.append(incremental.render(fs, set_state, touched, entity_id))
        return outcome


class DictState:
    """StateAccess over a plain dict: one per key, for tests and pure-Python runs."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def put(self, name: str, value: Any) -> None:
        self.values[name] = value

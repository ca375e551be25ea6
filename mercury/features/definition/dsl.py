"""The feature definition language: frozen, serialisable specs, validated when built.

A definition says *what* a feature is, never how an engine computes it: executors (the
reference oracle, the PyFlink job, the Spark job) and the online reader compile these specs.
Nothing here opens a connection or imports an engine.

Kinds of feature, all computed per entity (e.g. per user):
- ``Aggregate``: sum, count, min, max, avg or distinct count of a column over sliding windows
  (1h, 24h, 7d, 30d ...), optionally filtered (``where``) and grouped (``group_by``). Amounts
  declared as money on the source are always kept per currency: never summed across currencies.
- ``LastN``: the N most recent items (e.g. purchases), each merged from all its events
  (AUTH, SETTLEMENT, REVERSAL) so it carries its lifecycle status.
- ``Latest``: the newest value of some fields (a profile from CDC, a risk flag per type).

Window semantics (shared by every executor, see ``mercury.features.definition.windows``): a window W
is tiled by a hop h; as of time t it covers the h-aligned tiles from the one holding t back W/h
tiles, i.e. events with ``tile_start(t) - W + h <= event_ts <= t``. At the last millisecond of a
tile this is exactly (t - W, t]; elsewhere the oldest part of one hop is not yet counted. That is
what lets a streaming store answer at any request time from pre-aggregated tiles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, cast

from mercury import durations
from mercury.contracts import registry
from mercury.features.definition.errors import DefinitionError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
AGGREGATIONS = ("sum", "count", "min", "max", "avg", "distinct_count")
FILTER_OPS = ("eq", "ne", "in", "not_in", "not_null", "is_null")


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise DefinitionError(f"{kind} name {name!r}: use lower_snake_case, at most 48 chars")


def _duration(what: str, text: str) -> int:
    try:
        return durations.parse_duration(text)
    except durations.DurationError as exc:
        raise DefinitionError(f"{what}: {exc}") from None


def _check_reserved(feature: str, names: Iterable[str], reserved: Iterable[str]) -> None:
    clash = sorted(set(names) & set(reserved))
    if clash:
        raise DefinitionError(f"{feature}: field names {clash} are reserved in its values")


@dataclass(frozen=True)
class Entity:
    """What features are about. ``tag`` is the short prefix of its Redis hash tag."""
    name: str
    join_key: str
    tag: str
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("entity", self.name)
        if not re.match(r"^[a-z]{1,3}$", self.tag):
            raise DefinitionError(f"entity {self.name}: tag {self.tag!r} must be 1-3 letters")


@dataclass(frozen=True)
class Derived:
    """A column computed from others by a named function of
    ``mercury.features.definition.transforms``."""
    name: str
    function: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """A stream of the registry, as features read it.

    ``money`` pairs each amount column with its currency column. ``envelope="debezium"`` means
    records are change events: the row is ``after`` (``before`` for deletes), ordered by
    ``source.lsn``, timed by ``source.ts_ms``.
    """
    stream: str
    money: tuple[tuple[str, str], ...] = ()
    derived: tuple[Derived, ...] = ()
    envelope: str | None = None

    def __post_init__(self) -> None:
        try:
            declared = registry.stream(self.stream)
        except KeyError:
            raise DefinitionError(f"source {self.stream!r} is not a stream of the registry") \
                from None
        if declared.is_dead_letter:
            raise DefinitionError(f"source {self.stream}: features never read a dead-letter stream")
        if self.envelope not in (None, "debezium"):
            raise DefinitionError(f"source {self.stream}: unknown envelope {self.envelope!r}")
        from mercury.features.definition import transforms

        for column in self.derived:
            if column.function not in transforms.FUNCTIONS:
                raise DefinitionError(
                    f"source {self.stream}: derived column {column.name} uses unknown function "
                    f"{column.function!r}; known: {', '.join(sorted(transforms.FUNCTIONS))}")

    def currency_of(self, column: str) -> str | None:
        return dict(self.money).get(column)


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: object = None

    def __post_init__(self) -> None:
        if self.op not in FILTER_OPS:
            raise DefinitionError(f"filter on {self.column}: op {self.op!r} not in {FILTER_OPS}")
        if self.op in ("in", "not_in"):
            if isinstance(self.value, str):
                raise DefinitionError(f"filter on {self.column}: {self.op} needs a list of values")
            object.__setattr__(self, "value", tuple(cast("Iterable[object]", self.value)))


def eq(column: str, value: object) -> Filter:
    return Filter(column, "eq", value)


def isin(column: str, *values: object) -> Filter:
    return Filter(column, "in", values)


@dataclass(frozen=True)
class Aggregate:
    name: str
    op: str
    column: str | None  # None only for count
    windows: tuple[str, ...]
    where: tuple[Filter, ...] = ()
    group_by: str | None = None
    description: str = ""
    kind: str = field(default="aggregate", init=False)

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        if self.op not in AGGREGATIONS:
            raise DefinitionError(f"{self.name}: op {self.op!r} not in {AGGREGATIONS}")
        if self.column is None and self.op != "count":
            raise DefinitionError(f"{self.name}: {self.op} needs a column")
        if not self.windows:
            raise DefinitionError(f"{self.name}: give at least one window")
        from mercury.features.definition.windows import window

        object.__setattr__(self, "windows", tuple(self.windows))
        labels = [window(text).label for text in self.windows]  # validates each
        if len(set(labels)) != len(labels):
            raise DefinitionError(f"{self.name}: windows {self.windows} repeat a length")


@dataclass(frozen=True)
class LastN:
    """The ``n`` newest items, an item being all events sharing ``item_key``.

    An item is ordered by its earliest event time. Each field takes its value from the item's
    event of highest ``status_rank`` (then newest) that has it, so a settlement's final amount
    replaces the authorised one whatever order the events arrive in.
    """
    name: str
    n: int
    item_key: str
    fields: tuple[str, ...]
    status: str
    status_rank: tuple[tuple[str, int], ...]
    where: tuple[Filter, ...] = ()
    description: str = ""
    kind: str = field(default="last_n", init=False)

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        if not 1 <= self.n <= 100:
            raise DefinitionError(f"{self.name}: n must be within 1..100")
        object.__setattr__(self, "status_rank", tuple(tuple(p) for p in self.status_rank))
        _check_reserved(self.name, self.fields, ("item", "ts", "status"))


@dataclass(frozen=True)
class Latest:
    """The newest value of ``fields``; with ``per``, one newest value per value of that column.

    ``max_age`` hides a value older than that at read time; ``expires`` names a column holding
    the time after which the value no longer holds.
    """
    name: str
    fields: tuple[str, ...]
    per: str | None = None
    max_age: str | None = None
    expires: str | None = None
    where: tuple[Filter, ...] = ()
    description: str = ""
    kind: str = field(default="latest", init=False)

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        if self.max_age is not None:
            _duration(f"{self.name} max_age", self.max_age)
        _check_reserved(self.name, self.fields, ("ts",))


Feature = Aggregate | LastN | Latest


@dataclass(frozen=True)
class FeatureSet:
    """The unit of serving, versioning and TTL: features of one entity from one source.

    ``ttl`` is how long an entity's values live in the online store after its last event.
    Bump ``version`` whenever a change alters values; the new version is filled while the old
    one serves, then promoted (see ``mercury.features.lifecycle.bluegreen``).
    """
    name: str
    version: int
    entity: Entity
    source: Source
    features: tuple[Feature, ...]
    ttl: str
    owner: str
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("feature set", self.name)
        if self.version < 1:
            raise DefinitionError(f"{self.name}: version starts at 1")
        if not self.owner:
            raise DefinitionError(f"{self.name}: name an owner")
        _duration(f"{self.name} ttl", self.ttl)
        object.__setattr__(self, "features", tuple(self.features))
        if not self.features:
            raise DefinitionError(f"{self.name}: a feature set needs at least one feature")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise DefinitionError(f"{self.name}: feature names repeat: {names}")
        from mercury.features.definition.columns import check_columns

        check_columns(self)

    @property
    def ref(self) -> str:
        return f"{self.name}.v{self.version}"

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"{self.ref} has no feature {name!r}")


# ---- serialisation: plain JSON-able dicts, tagged where a union needs it -----------------

_KINDS: dict[str, type[Aggregate] | type[LastN] | type[Latest]] = {
    "aggregate": Aggregate, "last_n": LastN, "latest": Latest}


def to_dict(spec: DataclassInstance) -> dict[str, Any]:
    out = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        out[f.name] = _plain(value)
    return out


def _plain(value: object) -> Any:  # JSON-able
    if is_dataclass(value):
        return to_dict(cast("DataclassInstance", value))  # specs hold instances, not classes
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def feature_set_from_dict(data: Mapping[str, Any]) -> FeatureSet:
    source = dict(data["source"])
    source["money"] = tuple(tuple(p) for p in source["money"])
    source["derived"] = tuple(Derived(d["name"], d["function"], tuple(d["inputs"]))
                              for d in source["derived"])
    return FeatureSet(
        name=data["name"], version=data["version"], entity=Entity(**data["entity"]),
        source=Source(**source), features=tuple(_feature(f) for f in data["features"]),
        ttl=data["ttl"], owner=data["owner"], description=data.get("description", ""))


def _feature(data: dict[str, Any]) -> Feature:
    data = dict(data)
    cls = _KINDS[data.pop("kind")]
    data["where"] = tuple(Filter(**w) for w in data.get("where", ()))
    for name in ("windows", "fields"):
        if name in data:
            data[name] = tuple(data[name])
    return cls(**data)

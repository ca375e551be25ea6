"""The online store's key layout (Redis; valid on Redis Cluster).

One hash per (entity, feature set, version):

    fs:{u:<user_id>}:<set>:v<version>

The ``{u:<user_id>}`` hash tag puts all of a user's feature sets in one cluster slot, so the
reader fetches a user's whole context in one pipelined round trip. The version in the key lets
a new definition be filled while the old one serves; ``fs:{active}:<set>`` holds the version
that is served. ``fs:{priors}:<set>:v<version>`` holds that version's fallback priors.

Fields of the hash (values are compact JSON):

    t:<hop>:<index>   one tile: {feature: {bucket: partial}} for the tile
                      [index*hop, (index+1)*hop) of event time; hop is 5m, 1h or 1d
    l:<feature>       a last-N list, newest first, already merged per item
    v:<feature>       latest values: {per_value: {"ts", "exp", "values"} or null if deleted}
    _ts               newest event time applied, capped by its arrival (epoch ms)

Every write overwrites whole fields with state the streaming job owns, never increments, so
replaying events after a failure rewrites the same bytes. The hash's TTL is the feature set's
``ttl``, renewed on every write; tiles that slid out of every window are deleted by the writer.
"""

from __future__ import annotations

from typing import Protocol

from mercury.durations import format_duration, parse_duration

ACTIVE_PREFIX = "fs:{active}:"  # one hash tag: all pointers in one slot, one MGET
STAMP_FIELD = "_ts"
# Erasure hashes of users just erased, scored by when (serving processes drop their caches).
ERASURES_KEY = "privacy:{erasures}"
# Fallback priors, one JSON document per set version (mercury/features/offline/priors.py):
# one hash tag, so a serving process reads them all from one slot in one round trip.
PRIORS_PREFIX = "fs:{priors}:"


class _Entity(Protocol):
    @property
    def tag(self) -> str: ...


class KeyedSet(Protocol):
    """What a key needs of a feature set (``mercury.features``' ``FeatureSet``): its name,
    version and entity's hash tag. A protocol, so the store never imports the features."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def entity(self) -> _Entity: ...


def entity_key(feature_set: KeyedSet, entity_id: str) -> str:
    return f"fs:{{{feature_set.entity.tag}:{entity_id}}}:{feature_set.name}:v{feature_set.version}"


def active_key(set_name: str) -> str:
    return f"{ACTIVE_PREFIX}{set_name}"


def prior_key(set_name: str, version: int) -> str:
    return f"{PRIORS_PREFIX}{set_name}:v{version}"


def tile_field(hop_ms: int, index: int) -> str:
    return f"t:{hop_label(hop_ms)}:{index}"


def parse_tile_field(name: str) -> tuple[int, int]:
    _, hop, index = name.split(":")
    return parse_duration(hop), int(index)


def hop_label(hop_ms: int) -> str:
    return format_duration(hop_ms)


def tile_below(name: str, first_read: tuple[tuple[int, int], ...]) -> bool:
    """Whether ``name`` is a tile field of one of these hops below the first index read."""
    if not name.startswith("t:"):
        return False
    hop, index = parse_tile_field(name)
    return any(hop == h and index < first for h, first in first_read)


def list_field(feature_name: str) -> str:
    return f"l:{feature_name}"


def latest_field(feature_name: str) -> str:
    return f"v:{feature_name}"

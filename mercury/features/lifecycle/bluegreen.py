"""Blue/green versions of a feature set in the online store: compare, promote, roll back, retire.

A new version is filled beside the served one (streamed, or warm-started: see
``mercury.features.lifecycle.warm_start``), then:

- ``shadow_compare`` reads both versions' hashes of the same entities and decodes them as of
  the same time. A feature whose definition is identical in both versions must have identical
  values: any difference is named (a bug in the new pipeline, not a change of meaning). Changed
  features are compared on what they share (the common windows of an aggregate) and new ones
  summarised, each with the share of equal values and a few examples.
- ``promote`` points readers at the new version and remembers the one it replaced;
  ``rollback`` serves the previous one again (one step back per call). Both are one atomic
  script on the pointer's ``{active}`` hash slot.
- ``retire`` sets an expiry on every key of a version that is no longer served: its hashes, its
  warm-start state and marker, found with SCAN (on a cluster, on every primary). It refuses the
  served version. The streaming job must stop writing that version first: each of its writes
  renews a hash's TTL to the set's ``ttl``.

Readers cache the pointer for ``pointer_ttl_ms`` (a second), so a promotion or rollback reaches
every reader within that time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson

from mercury.features.definition.dsl import Aggregate
from mercury.features.executors.agreement import same
from mercury.features.reader import decode
from mercury.online import layout

READ_BATCH = 500
EXAMPLES = 5


class BlueGreenError(RuntimeError):
    """A promotion, rollback or retirement that must not happen; the message says why."""


@dataclass
class FeatureComparison:
    name: str
    status: str            # "unchanged", "changed" or "new"
    compared_on: str       # what was compared: "value", "windows 1h 1d", or "-" (new)
    entities: int = 0
    equal: int = 0
    examples: list = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.equal / self.entities if self.entities else 1.0


@dataclass
class ShadowReport:
    old: str
    new: str
    as_of_ms: int
    entities: int
    features: dict[str, FeatureComparison]
    dropped: tuple[str, ...]  # features of the old version the new one no longer has

    @property
    def differing_unchanged(self) -> list[str]:
        """Features defined identically in both versions whose values differ somewhere."""
        return [c.name for c in self.features.values()
                if c.status == "unchanged" and c.equal < c.entities]

    @property
    def ok(self) -> bool:
        return not self.differing_unchanged

    def summary(self) -> str:
        lines = [f"{self.old} -> {self.new} as of {self.as_of_ms}: {self.entities} entities; "
                 + ("every unchanged feature equal" if self.ok else
                    f"UNCHANGED FEATURES DIFFER: {', '.join(self.differing_unchanged)}")]
        for c in self.features.values():
            lines.append(f"  {c.name:<22} {c.status:<9} {c.compared_on:<24} "
                         f"{c.equal}/{c.entities} equal ({c.share:.1%})")
            lines += [f"      {e}" for e in c.examples[:3]]
        if self.dropped:
            lines.append(f"  dropped in {self.new}: {', '.join(self.dropped)}")
        return "\n".join(lines)

    def to_json(self) -> bytes:
        return orjson.dumps({
            "old": self.old, "new": self.new, "as_of_ms": self.as_of_ms,
            "entities": self.entities, "ok": self.ok,
            "differing_unchanged": self.differing_unchanged, "dropped": list(self.dropped),
            "features": {c.name: {"status": c.status, "compared_on": c.compared_on,
                                  "entities": c.entities, "equal": c.equal, "share": c.share,
                                  "examples": c.examples} for c in self.features.values()}},
            option=orjson.OPT_INDENT_2)


# ---- shadow comparison ----------------------------------------------------------------------

def _comparisons(old_fs, new_fs) -> dict[str, tuple[FeatureComparison, tuple | None]]:
    """Per feature of the new version: its comparison and the window labels to compare on
    (None: the whole value)."""
    from mercury.features.definition.windows import window

    old_names = {f.name for f in old_fs.features}
    out: dict[str, tuple[FeatureComparison, tuple[str, ...] | None]] = {}
    for feature in new_fs.features:
        if feature.name not in old_names:
            out[feature.name] = (FeatureComparison(feature.name, "new", "-"), None)
            continue
        before = old_fs.feature(feature.name)
        if before == feature:
            out[feature.name] = (FeatureComparison(feature.name, "unchanged", "value"), None)
            continue
        labels = None
        if isinstance(feature, Aggregate) and isinstance(before, Aggregate):
            shared = {window(t).label for t in before.windows} & \
                {window(t).label for t in feature.windows}
            same_sense = (before.op, before.column, before.where, before.group_by) == \
                (feature.op, feature.column, feature.where, feature.group_by)
            if same_sense and shared:
                labels = tuple(sorted(shared, key=lambda label: window(label).length_ms))
        compared_on = "value" if labels is None else f"windows {' '.join(labels)}"
        out[feature.name] = (FeatureComparison(feature.name, "changed", compared_on), labels)
    return out


def _entity_ids(store, feature_sets) -> list[str]:
    ids: set[str] = set()
    for fs in feature_sets:
        pattern = re.compile(rf"^fs:\{{{fs.entity.tag}:([^}}]*)\}}:{fs.name}:v{fs.version}$")
        for key in store.scan(f"fs:{{{fs.entity.tag}:*}}:{fs.name}:v{fs.version}"):
            match = pattern.match(key)
            if match:
                ids.add(match.group(1))
    return sorted(ids)


def shadow_compare(store, old_fs, new_fs, entity_ids=None, as_of_ms: int | None = None,
                   sample: int = 10_000) -> ShadowReport:
    """Both versions' values of the same entities as of the same time (see the module doc).

    ``entity_ids``: by default every entity either version holds, the first ``sample`` in id
    order. ``as_of_ms``: by default the newest event time either version holds, where the
    store's values are exact."""
    if (old_fs.name, old_fs.entity) != (new_fs.name, new_fs.entity):
        raise BlueGreenError(f"{old_fs.ref} and {new_fs.ref} are not versions of one set")
    if entity_ids is None:
        entity_ids = _entity_ids(store, (old_fs, new_fs))[:sample]
    entity_ids = list(entity_ids)
    pairs = []
    for start in range(0, len(entity_ids), READ_BATCH):
        chunk = entity_ids[start:start + READ_BATCH]
        hashes = store.read([layout.entity_key(fs, e) for e in chunk for fs in (old_fs, new_fs)])
        pairs += [(e, hashes[2 * i], hashes[2 * i + 1]) for i, e in enumerate(chunk)]
    if as_of_ms is None:
        stamps = [int(h[layout.STAMP_FIELD]) for _, *both in pairs for h in both
                  if h.get(layout.STAMP_FIELD)]
        as_of_ms = max(stamps, default=0)
    comparisons = _comparisons(old_fs, new_fs)
    for entity, old_fields, new_fields in pairs:
        old_values = decode(old_fs, old_fields, as_of_ms)
        new_values = decode(new_fs, new_fields, as_of_ms)
        for name, (comparison, labels) in comparisons.items():
            comparison.entities += 1
            new_value = new_values[name]
            if comparison.status == "new":
                if new_value not in (None, {}, []):
                    comparison.equal += 1  # for a new feature: entities with a value
                if len(comparison.examples) < EXAMPLES and new_value not in (None, {}, []):
                    comparison.examples.append(f"{entity}: {new_value!r}")
                continue
            old_value = old_values[name]
            if labels is not None:
                old_value = {k: old_value.get(k) for k in labels}
                new_value = {k: new_value.get(k) for k in labels}
            if same(old_value, new_value):
                comparison.equal += 1
            elif len(comparison.examples) < EXAMPLES:
                comparison.examples.append(
                    f"{entity}: {old_fs.ref}={old_value!r} {new_fs.ref}={new_value!r}")
    for comparison, _ in comparisons.values():
        if comparison.status == "new":
            comparison.compared_on = "entities with a value"
    dropped = tuple(f.name for f in old_fs.features if f.name not in comparisons)
    return ShadowReport(old_fs.ref, new_fs.ref, as_of_ms, len(pairs),
                        {name: c for name, (c, _) in comparisons.items()}, dropped)


# ---- promote, roll back, retire ---------------------------------------------------------------

@dataclass(frozen=True)
class Switch:
    set_name: str
    before: int | None
    after: int

    def summary(self) -> str:
        was = "nothing" if self.before is None else f"v{self.before}"
        return f"{self.set_name}: now serving v{self.after} (was {was})"


def _compiled(set_name: str, version: int):
    from mercury.features.definition import compile as compiler

    try:
        return compiler.load_compiled([f"{set_name}.v{version}"])[0]
    except compiler.CompileError as exc:
        raise BlueGreenError(str(exc)) from None


def promote(store, set_name: str, version: int) -> Switch:
    """Serve ``version`` (a compiled spec) from now on; the replaced version is remembered."""
    _compiled(set_name, version)
    return Switch(set_name, store.promote(set_name, version), version)


def rollback(store, set_name: str) -> Switch:
    """Serve the version the last promotion replaced (one step back per call)."""
    result = store.rollback(set_name)
    if result is None:
        raise BlueGreenError(f"{set_name}: no earlier served version is remembered; "
                             "promote a version explicitly")
    replaced, restored = result
    return Switch(set_name, replaced, restored)


@dataclass(frozen=True)
class Retirement:
    set_name: str
    version: int
    keys: int
    after_s: int

    def summary(self) -> str:
        return (f"{self.set_name} v{self.version}: {self.keys} keys expire within "
                f"{self.after_s} s")


def retire(store, set_name: str, version: int, after_s: int) -> Retirement:
    """Expire every key of ``version`` of ``set_name`` within ``after_s`` (the rollback
    window, ``offline.retire_after_s``); refuses the served version."""
    if after_s < 0:
        raise BlueGreenError(f"after_s must be >= 0, not {after_s}")
    served = store.active_versions([set_name])[set_name]
    if served == version:
        raise BlueGreenError(f"{set_name} v{version} is the served version; promote "
                             "another version (or roll back) before retiring it")
    tail = re.escape(f"{set_name}:v{version}")
    # The glob also matches foreign shapes (``*`` spans ``}``): keep exact key shapes only.
    own = re.compile(rf"^fs:\{{[^}}]*\}}:{tail}(:boot)?$")
    keys, expired = [], 0
    for pattern in (f"fs:{{*}}:{set_name}:v{version}", f"fs:{{*}}:{set_name}:v{version}:boot"):
        keys += [k for k in store.scan(pattern) if own.match(k)]
    keys = sorted(set(keys))  # SCAN may report a key twice
    for start in range(0, len(keys), 1_000):
        expired += store.expire(keys[start:start + 1_000], after_s * 1000)
    return Retirement(set_name, version, expired, after_s)

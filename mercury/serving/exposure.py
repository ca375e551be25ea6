"""What the context API may hand to a model: only columns whose contract says ``public``.

Checked once when the service starts, over every feature set it serves: each column a
feature returns (a latest/last-N field, a group-by key, a column whose values an aggregate
shows, and the inputs of derived columns) is looked up in its stream's contract. A column
classed personal, card data or pseudonymous id (other than the entity's own key) makes the
service refuse to start,
naming the feature and the column: a definition cannot leak a card's last four digits or an
e-mail address into prompts by accident.
"""

from __future__ import annotations

from collections.abc import Iterable

from mercury.contracts import registry, schemas
from mercury.contracts.data_classes import DataClass, field_classes
from mercury.features.definition.dsl import Aggregate, FeatureSet, LastN, Latest


class ExposureError(ValueError):
    pass


def _columns(feature_set: FeatureSet) -> dict[str, list[str]]:
    """Feature name -> the source columns its value shows."""
    derived = {d.name: list(d.inputs) for d in feature_set.source.derived}
    out: dict[str, list[str]] = {}
    for feature in feature_set.features:
        if isinstance(feature, Aggregate):
            # A count of distinct session ids shows a number, not the ids; min, max and the
            # group-by keys show column values.
            shown = feature.column if feature.op not in ("count", "distinct_count") else None
            cols = [c for c in (shown, feature.group_by) if c]
        elif isinstance(feature, LastN):
            cols = [*feature.fields, feature.status, feature.item_key]
        elif isinstance(feature, Latest):
            cols = [*feature.fields, *([feature.per] if feature.per else [])]
        else:
            cols = []
        expanded: list[str] = []
        for col in cols:
            expanded.extend(derived.get(col, [col]))
        out[feature.name] = expanded
    return out


def check_exposure(feature_sets: Iterable[FeatureSet]) -> None:
    problems: list[str] = []
    for fs in feature_sets:
        subject = registry.stream(fs.source.stream).schema_subject
        classes = field_classes(schemas.load(subject).schema)
        prefix = "after." if fs.source.envelope == "debezium" else ""
        for feature, cols in _columns(fs).items():
            for col in cols:
                found = classes.get(prefix + col)
                if found is None:
                    continue  # computed by the pipeline, not a contract column
                if found is DataClass.PUBLIC or col == fs.entity.join_key:
                    continue
                problems.append(f"{fs.ref}.{feature} shows {subject}.{prefix}{col} "
                                f"({found.value})")
    if problems:
        raise ExposureError("the context API serves only public columns: "
                            + "; ".join(problems))

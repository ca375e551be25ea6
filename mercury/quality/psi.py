"""Population stability index: how far one distribution has moved from a reference one.

    PSI = sum over bins of (actual_i - expected_i) * ln(actual_i / expected_i)

with each side's counts turned into shares. Bins come from the reference (the training
values): quantile cut points for numbers, the categories seen for everything else, plus a
``missing`` bin (null or absent) and an ``other`` bin (a category the reference never had, or
a value of the wrong kind). An empty bin's share is floored at ``epsilon``, so a bin one side
never fills adds a large but finite term instead of an infinity.

Pure Python (and ``bisect``): importable in both environments, no numpy needed.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

MISSING = "missing"
OTHER = "other"
Kind = Literal["numeric", "categorical"]


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float) -> float:
    """PSI of ``actual`` against ``expected``: counts (or shares) per bin, same bins in the
    same order. Either side all zero has no distribution to compare: a ValueError."""
    if len(expected) != len(actual):
        raise ValueError(f"psi: {len(expected)} expected bins but {len(actual)} actual bins")
    total_e, total_a = sum(expected), sum(actual)
    if total_e <= 0 or total_a <= 0:
        raise ValueError("psi: a side with no values has no distribution "
                         f"(expected total {total_e}, actual total {total_a})")
    result = 0.0
    for e, a in zip(expected, actual, strict=True):
        share_e, share_a = max(e / total_e, epsilon), max(a / total_a, epsilon)
        result += (share_a - share_e) * math.log(share_a / share_e)
    return result


def is_number(value: object) -> bool:
    """A JSON number (bool is a category: True is not 1 here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def category(value: object) -> str:
    """A scalar as a category label: strings as they are, the rest as JSON would print it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@dataclass(frozen=True)
class Bins:
    """The bins of one feature, fixed from its reference values."""

    kind: Kind
    edges: tuple[float, ...] = ()  # numeric: bin i holds edges[i-1] < v <= edges[i]
    categories: tuple[str, ...] = ()  # categorical

    @cached_property
    def labels(self) -> tuple[str, ...]:
        if self.kind == "numeric":
            bounds = ("-inf", *(f"{e:g}" for e in self.edges), "inf")
            middle = tuple(f"({lo}, {hi}]" for lo, hi in zip(bounds, bounds[1:], strict=False))
        else:
            middle = self.categories
        return (*middle, MISSING, OTHER)

    def label(self, value: object) -> str:
        """The bin ``value`` falls in."""
        if value is None:
            return MISSING
        if self.kind == "numeric":
            if not is_number(value):
                return OTHER
            return self.labels[bisect_left(self.edges, float(value))]  # type: ignore[arg-type]
        if isinstance(value, dict | list):
            return OTHER
        name = category(value)
        return name if name in self._known else OTHER

    @cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(self.categories)

    def counts(self, values: Iterable[object], missing: int = 0) -> list[int]:
        """Counts per bin, in ``labels`` order; ``missing`` more rows with no value at all."""
        counted = Counter(self.label(v) for v in values)
        counted[MISSING] += missing
        return [counted.get(name, 0) for name in self.labels]


def bins_from(reference: Sequence[object], quantiles: int) -> Bins:
    """Bins of a feature from its reference values (nulls ignored): numeric when every value
    is a number, cut at the ``quantiles``-quantiles (repeated cut points merged, so a feature
    that is mostly 0 gets fewer, wider bins); categorical otherwise."""
    present = [v for v in reference if v is not None]
    if present and all(is_number(v) for v in present):
        ordered = sorted(float(v) for v in present)  # type: ignore[arg-type]
        n = len(ordered)
        # The inverted-CDF quantile: a value the reference really has, so ties stay together.
        cuts = {ordered[max(0, math.ceil(n * i / quantiles) - 1)] for i in range(1, quantiles)}
        return Bins("numeric", edges=tuple(sorted(cuts)))
    return Bins("categorical", categories=tuple(sorted({category(v) for v in present})))

"""Money as the context API shows it: each amount with at most its currency's decimals.

Inside the platform amounts stay as the executors compute them (sums of floats may read
``35406.759999999995``); this is the one place that rounds, at the API edge, for every path
that returns a set's values (online, snapshot, prior). Which values are money is read from
the definitions, never guessed from key names:

- an ``Aggregate`` over a money column (``Source.money``), other than a count, is keyed by
  currency last (``{"EUR": 12.5}``, ``{"grocery": {"EUR": 12.5}}``): each leaf is rounded
  by the currency of its key;
- a ``LastN`` or ``Latest`` that carries both columns of a money pair rounds each item's
  amount by that item's currency.

Rounding is half-even (banker's rounding) on the amount's shortest decimal form
(``repr``): an amount that was ``2.675`` when it was written rounds as ``2.675``, not as the
binary ``2.67499...``, and half-even keeps sums of many rounded amounts (priors are averages
of sums) free of the upward drift that half-up adds. Exponents are ISO 4217's; codes ISO
lists without a minor unit (precious metals, testing codes) and codes it does not list are
shown with two decimals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from mercury.features.definition.dsl import Aggregate, FeatureSet, LastN, Latest

DEFAULT_EXPONENT = 2
_SCALE = {places: 10 ** places for places in range(5)}
# ISO 4217 minor units that are not 2 (every other listed code has 2).
EXPONENTS: Mapping[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}
NOT_COUNTED = ("count", "distinct_count")  # ops whose value is a number of things, not money


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency, DEFAULT_EXPONENT)


def round_amount(amount: Any, currency: str) -> Any:
    """``amount`` with at most ``currency``'s decimals, half-even; an int when it has none.
    Anything that is not a number (None, a missing value) is returned as it is."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return amount
    places = exponent(currency)
    scaled = amount * _SCALE[places]
    if not math.isfinite(scaled) or \
            abs(scaled - math.floor(scaled) - 0.5) < 1e-9 * max(1.0, abs(scaled)):
        # Near a rounding boundary (a tie in the written decimals, e.g. 2.675), or not a
        # number: decide on the shortest decimal form, exactly.
        return _rounded(Decimal(repr(amount)), places)
    # Anywhere else no boundary lies between the float and its shortest decimal form, so the
    # float's own correctly rounded ``round`` gives the same answer, ~20x cheaper.
    rounded = round(amount, places)
    return int(rounded) if places == 0 else float(rounded)


def _rounded(value: Decimal, places: int) -> int | float:
    if not value.is_finite():
        return float(value)
    rounded = value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
    return int(rounded) if places == 0 else float(rounded)


def present(feature_set: FeatureSet, values: Mapping[str, Any] | None) -> Any:
    """A set's values as served: a copy with every money amount rounded (see the module doc).
    ``values`` itself is left as it is (the audit keeps what was read)."""
    if values is None:
        return None
    pairs = feature_set.source.money
    out = dict(values)
    for feature in feature_set.features:
        value = out.get(feature.name)
        if value is None:
            continue
        if isinstance(feature, Aggregate):
            if feature.op not in NOT_COUNTED and feature.column is not None and \
                    feature_set.source.currency_of(feature.column) is not None:
                out[feature.name] = {label: _by_currency_key(v) for label, v in value.items()}
        elif isinstance(feature, LastN):
            carried = [(a, c) for a, c in pairs if a in feature.fields and c in feature.fields]
            if carried:
                out[feature.name] = [_item(item, carried) for item in value]
        elif isinstance(feature, Latest):
            carried = [(a, c) for a, c in pairs if a in feature.fields and c in feature.fields]
            if carried:
                out[feature.name] = _item(value, carried) if feature.per is None else {
                    per: _item(entry, carried) for per, entry in value.items()}
    return out


def _by_currency_key(node: Any) -> Any:
    """A window's value keyed by currency last (maybe under group keys)."""
    if not isinstance(node, dict):
        return node
    return {key: _by_currency_key(v) if isinstance(v, dict) else round_amount(v, key)
            for key, v in node.items()}


def _item(item: Any, pairs: list[tuple[str, str]]) -> Any:
    if not isinstance(item, dict):
        return item
    out = dict(item)
    for amount, currency in pairs:
        if isinstance(out.get(currency), str):
            out[amount] = round_amount(out.get(amount), out[currency])
    return out

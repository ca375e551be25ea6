"""What the context API's money rule costs per answer (``mercury.serving.money.present``).

Every answer's sets go through ``present`` (docs/SERVING.md, "Money at the edge"); this times
it on a spending set with 27 amounts (windows x currencies x categories, sums of cents that
read like 35406.759999999995) and on 20 recent purchases, the best of 15 repeats of 2,000
calls each (the best is the cost; the others measure this shared machine's neighbours), and
records the load average beside it. As a yardstick that the load slows alike, the same
values encoded to JSON with orjson (what the answer costs to serialise anyway).

Results: bench/results/money_edge.json.
Usage: python bench/money_edge.py
"""

from __future__ import annotations

import json
import os
import random
import sys
import timeit
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mercury.features.definition.compile import load_one  # noqa: E402
from mercury.serving.money import present  # noqa: E402

CALLS, REPEATS = 2_000, 15
CURRENCIES = ("USD", "EUR", "JPY")


def spending_values(rng: random.Random) -> dict:
    def sums() -> dict:
        return {c: sum(round(rng.uniform(1, 300), 2) for _ in range(rng.randrange(1, 20)))
                for c in CURRENCIES}
    return {"settled_amount": {w: sums() for w in ("1h", "1d", "7d", "30d")},
            "authorised_amount": {w: sums() for w in ("1h", "1d", "7d")},
            "settled_by_category": {w: {"grocery": sums()} for w in ("7d", "30d")},
            "settled_count": {"30d": 4}, "merchants": {"30d": 3}}


def main() -> None:
    rng = random.Random(1)
    spending, purchases = load_one("spending.v1"), load_one("purchases.v1")
    values = spending_values(rng)
    items = {"recent_purchases": [
        {"amount": round(rng.uniform(1, 300), 2), "currency": CURRENCIES[i % 3],
         "merchant_id": "m", "ts": i} for i in range(20)]}
    load_before = os.getloadavg()[0]
    out = {}
    for name, call in (("spending_27_amounts", lambda: present(spending, values)),
                       ("purchases_20_items", lambda: present(purchases, items)),
                       ("yardstick_orjson_both", lambda: orjson.dumps([values, items]))):
        best = min(timeit.repeat(call, number=CALLS, repeat=REPEATS)) / CALLS * 1e6
        out[name] = round(best, 1)
        print(f"{name}: {best:.1f} us per call (best of {REPEATS} x {CALLS})")
    result = {"us_per_call": out, "load_average_1m_before": load_before,
              "load_average_1m_after": os.getloadavg()[0], "cpus": os.cpu_count()}
    path = Path(__file__).parent / "results" / "money_edge.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average {load_before:.1f} -> {result['load_average_1m_after']:.1f}; {path}")


if __name__ == "__main__":
    main()

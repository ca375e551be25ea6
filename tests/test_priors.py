"""Fallback priors (mercury/features/offline/priors.py) against a brute-force recomputation,
read from Iceberg history as of one day, published safely; the serving copy; and the API's
one money rule (mercury/serving/money.py). No Spark, no Redis: a few seconds."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import orjson
import pyarrow as pa
import pytest

from mercury.features.definition.compile import load_one
from mercury.features.definition.dsl import Aggregate
from mercury.features.definition.windows import window
from mercury.features.offline import priors
from mercury.online import layout
from mercury.online.memory_store import MemoryOnlineStore as MemoryStore
from mercury.serving.money import present, round_amount
from mercury.serving.priors import PriorBook

DAY = date(2026, 11, 20)
SPENDING, RISK = load_one("spending.v1"), load_one("risk.v1")
CURRENCIES = ("USD", "EUR", "JPY")
CATEGORIES = ("grocery", "travel")


def _spending_values(rng: random.Random) -> dict:
    """One user's spending values with the shapes the reader returns, adversarially sparse:
    currencies and categories missing, averages and extremes of nothing (null / absent)."""
    values: dict = {}
    for feature in SPENDING.features:
        assert isinstance(feature, Aggregate)
        by_window: dict = {}
        for text in feature.windows:
            label = window(text).label
            some = [c for c in CURRENCIES if rng.random() < 0.5]
            amount = lambda: round(rng.uniform(0.01, 500), 2) + rng.choice((0, 1e-9))  # noqa: E731
            if feature.op == "count" and feature.group_by is None:
                by_window[label] = rng.randrange(0, 9)
            elif feature.op == "distinct_count":
                by_window[label] = rng.randrange(0, 5)
            elif feature.group_by is not None:
                by_window[label] = {g: {c: amount() for c in some}
                                    for g in CATEGORIES if rng.random() < 0.6}
            else:
                by_window[label] = {c: amount() for c in some}
        values[feature.name] = by_window
    return values


def _brute_force(rows: dict[str, dict], users: list[str]) -> dict:
    """The mean of every leaf over ``users``, exactly (fractions), written from the rule in
    the module doc: additive ops average over every user (absent = 0), others over users
    that have the leaf."""
    out: dict = {}
    for feature in SPENDING.features:
        additive = feature.op in ("sum", "count", "distinct_count")
        for text in feature.windows:
            label = window(text).label
            leaves: dict[tuple, list[Fraction]] = {}
            for user in users:
                value = rows[user][feature.name][label]
                flat: dict[tuple, object] = {}
                if not isinstance(value, dict):
                    flat[()] = value
                else:
                    for key, inner in value.items():
                        if isinstance(inner, dict):
                            for key2, leaf in inner.items():
                                flat[(key, key2)] = leaf
                        else:
                            flat[(key,)] = inner
                for path, leaf in flat.items():
                    if leaf is not None:
                        leaves.setdefault(path, []).append(Fraction(leaf))
            for path, seen in leaves.items():
                n = len(users) if additive else len(seen)
                out[(feature.name, label, path)] = sum(seen, Fraction(0)) / n
    return out


def _flatten(values: dict) -> dict:
    out = {}
    for feature, by_window in values.items():
        for label, value in by_window.items():
            if not isinstance(value, dict):
                out[(feature, label, ())] = value
                continue
            for k, v in value.items():
                if isinstance(v, dict):
                    out.update({(feature, label, (k, k2)): v2 for k2, v2 in v.items()})
                else:
                    out[(feature, label, (k,))] = v
    return out


def _world(seed: int = 7):
    rng = random.Random(seed)
    users = [f"usr_{i:02d}" for i in range(23)]
    rows = {u: _spending_values(rng) for u in users}
    # FR/LOW: 9 users (published at min 5); DE/HIGH: 4 (too small: the population's);
    # 10 with no profile that day (the population's only).
    segments = {u: "FR/LOW" for u in users[:9]} | {u: "DE/HIGH" for u in users[9:13]}
    return users, rows, segments


def test_segment_averages_match_a_brute_force_recomputation():
    users, rows, segments = _world()
    result = priors.compute(SPENDING, DAY, ((u, rows[u]) for u in reversed(users)), segments,
                            min_count=5)
    assert set(result.segments) == {"FR/LOW"}  # DE/HIGH has 4 users < 5
    assert result.population["count"] == 23 and result.segments["FR/LOW"]["count"] == 9
    for got, who in ((result.population, users), (result.segments["FR/LOW"], users[:9])):
        expected = _brute_force(rows, who)
        flat = _flatten(got["values"])
        assert set(flat) == set(expected)
        for leaf, mean in expected.items():
            assert flat[leaf] == pytest.approx(float(mean), rel=1e-12, abs=1e-12), leaf
    # A sum a user lacks (no spend in that currency) counts as 0: not the mean of those with
    # spend, which a naive average of the present keys would give.
    usd = [rows[u]["settled_amount"]["30d"].get("USD") for u in users]
    assert None in usd
    present_only = sum(v for v in usd if v is not None) / sum(v is not None for v in usd)
    assert result.population["values"]["settled_amount"]["30d"]["USD"] == pytest.approx(
        sum(v or 0 for v in usd) / len(usd)) != pytest.approx(present_only)
    # A window nobody had keeps its shape: keyed -> {}, a number of nothing -> None.
    empty = priors.compute(SPENDING, DAY, [("u", {})], {}, 1).population["values"]
    assert empty["settled_amount"]["30d"] == {} and empty["settled_count"]["7d"] is None


def test_non_numeric_features_have_no_prior():
    flags = {"flags": {"VELOCITY": {"severity": "HIGH", "score": 0.9, "ts": 1}},
             "signals": {"1d": 2, "7d": 5}}
    result = priors.compute(RISK, DAY, [("a", flags), ("b", {**flags, "signals": {
        "1d": 0, "7d": 1}})], {}, 1)
    assert result.population["values"] == {"flags": None, "signals": {"1d": 1.0, "7d": 3.0}}
    assert not priors.has_prior(load_one("purchases.v1"))
    assert not priors.has_prior(load_one("profile.v1"))


def test_segment_of_reads_country_and_tier_and_refuses_half_a_profile():
    profile = {"profile": {"home_country": "FR", "risk_tier": "LOW", "locale": "fr-FR"}}
    assert priors.segment_of(profile) == "FR/LOW"
    assert priors.segment_of({"profile": {"home_country": "FR", "risk_tier": None}}) is None
    assert priors.segment_of({"profile": None}) is None and priors.segment_of(None) is None


def _write_history(settings, fs, rows_by_day: dict[date, dict[str, dict]]) -> None:
    from mercury.features.offline import history

    table = history.ensure_table(settings, fs)
    ids, as_of, texts = [], [], []
    for day, rows in rows_by_day.items():
        for user, values in rows.items():
            ids.append(user)
            as_of.append(history.day_end_ms(day))
            texts.append(orjson.dumps(values).decode())
    result = pa.table({"entity_id": ids, "as_of_ms": pa.array(as_of, pa.int64()),
                       "values": texts})
    table.append(history.to_rows(fs, result, datetime(2026, 11, 22, tzinfo=UTC)))


def test_priors_come_from_the_history_of_that_day_with_that_days_segments(tmp_settings):
    users, rows, segments = _world()
    profile = load_one("profile.v1")
    before, after = DAY - timedelta(days=1), DAY + timedelta(days=1)

    def profiles(of: dict[str, str]) -> dict[str, dict]:
        return {u: {"profile": dict(zip(("home_country", "risk_tier"), s.split("/"),
                                        strict=True))} for u, s in of.items()}

    # The day after, every FR/LOW user moved to DE/HIGH: the priors of DAY must not see it.
    moved = {u: "DE/HIGH" for u in segments}
    _write_history(tmp_settings, profile, {DAY: profiles(segments), after: profiles(moved)})
    shifted = {u: {**v, "settled_count": {k: 1_000 for k in v["settled_count"]}}
               for u, v in rows.items()}
    _write_history(tmp_settings, SPENDING, {before: shifted, DAY: rows, after: shifted})
    lines: list[str] = []
    found = priors.from_history(tmp_settings, [SPENDING, profile, RISK], DAY, lines.append)
    assert [p.set_name for p in found] == ["spending"]  # risk: no table; profile: no numbers
    assert any("risk.v1: no prior" in line for line in lines)
    want = priors.compute(SPENDING, DAY, rows.items(), segments,
                          tmp_settings.offline.priors_min_count)
    assert found[0].to_json() == want.to_json()
    assert found[0].as_of_ms == int(datetime(2026, 11, 20, 23, 59, 59, 999_000,
                                             tzinfo=UTC).timestamp() * 1000)
    # A population under the minimum count publishes nothing (an average of few is a leak).
    strict = tmp_settings.model_copy(update={"offline": tmp_settings.offline.model_copy(
        update={"priors_min_count": 24})})
    assert priors.from_history(strict, [SPENDING, profile], DAY, lines.append) == []
    assert "spending.v1: no prior: 23 users on 2026-11-20, fewer than 24" in lines
    # A day with no history rows gives no prior (the published one stays).
    assert priors.from_history(tmp_settings, [SPENDING], DAY + timedelta(days=5),
                               lines.append) == []


def test_publishing_is_idempotent_keyed_per_version_and_never_goes_back_a_day():
    users, rows, segments = _world()
    store = MemoryStore()
    today = priors.compute(SPENDING, DAY, rows.items(), segments, 5)
    key = layout.prior_key("spending", 1)
    assert key == "fs:{priors}:spending:v1"  # one hash tag: one slot on a cluster
    assert priors.publish(store, [today], ttl_s=86_400) == {key: "written"}
    first = store.values[key]
    assert priors.publish(store, [today], ttl_s=86_400) == {key: "written"}
    assert store.values[key] == first and store.ttls[key] == 86_400_000
    older = priors.compute(SPENDING, DAY - timedelta(days=1), rows.items(), {}, 5)
    assert priors.publish(store, [older], ttl_s=86_400) == {key: f"kept {DAY.isoformat()}"}
    assert store.values[key] == first


def test_the_serving_copy_picks_the_segment_or_the_population_and_survives_the_store():
    users, rows, segments = _world()
    store = MemoryStore()
    published = priors.compute(SPENDING, DAY, rows.items(), segments, 5)
    priors.publish(store, [published], ttl_s=86_400)
    book = PriorBook(store, [("spending", 1), ("declines", 1)])
    assert book.refresh() == 1
    fr = book.lookup("spending", 1, "FR/LOW")
    assert (fr.segment, fr.users) == ("FR/LOW", 9)
    assert fr.values == orjson.loads(published.to_json())["segments"]["FR/LOW"]["values"]
    for small_or_unknown in ("DE/HIGH", None, "XX/LOW"):
        assert book.lookup("spending", 1, small_or_unknown).segment == "population"
    assert book.lookup("spending", 2, "FR/LOW") is None  # another version: not this prior
    assert book.lookup("declines", 1, None) is None  # never published

    def down(keys):
        raise ConnectionError("store down")

    store.get_values = down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        book.refresh()
    assert book.lookup("spending", 1, "FR/LOW") == fr  # the copy held stays


def test_the_priors_day_is_the_last_whole_day_before_the_interval_end():
    import sys

    from mercury.config import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    try:
        from mercury_airflow.tasks.feature_priors import priors_day
    finally:
        sys.path.remove(str(REPO_ROOT / "plugins"))

    assert priors_day(None, datetime(2026, 11, 21, 4, 0, tzinfo=UTC)) == DAY
    assert priors_day(None, datetime(2026, 11, 21, 0, 0, tzinfo=UTC)) == DAY
    assert priors_day("2026-11-02", datetime(2026, 11, 21, tzinfo=UTC)) == date(2026, 11, 2)
    with pytest.raises(ValueError, match="day: '21/11' is not a date"):
        priors_day("21/11", datetime(2026, 11, 21, tzinfo=UTC))


# --- money at the edge ---------------------------------------------------------------------

@pytest.mark.parametrize("amount, currency, shown", [
    (35406.759999999995, "USD", 35406.76),
    (2.675, "EUR", 2.68),     # half-even on the decimal written, not on binary 2.67499..
    (2.665, "EUR", 2.66),     # a tie goes to the even digit
    (1234.5, "JPY", 1234),    # no minor unit: an int
    (1235.5, "JPY", 1236),
    (0.1 + 0.2, "GBP", 0.3),
    (1.23456, "BHD", 1.235),  # three decimals
    (7, "USD", 7.0),
    (None, "USD", None),
    (12.345, "XXX", 12.34),   # no minor unit in ISO (or unknown): two decimals
])
def test_amounts_are_rounded_half_even_to_their_currencys_exponent(amount, currency, shown):
    got = round_amount(amount, currency)
    assert got == shown and type(got) is type(shown)


def test_present_rounds_every_money_value_of_a_set_and_only_those():
    values = {"settled_amount": {"30d": {"USD": 10.005, "JPY": 99.5}},
              "settled_count": {"30d": 3},
              "settled_by_category": {"7d": {"grocery": {"EUR": 1.115}}},
              "average_purchase": {"30d": {"EUR": 33.333333}},
              "merchants": {"7d": 2}}
    shown = present(SPENDING, values)
    assert shown["settled_amount"]["30d"] == {"USD": 10.0, "JPY": 100}
    assert shown["settled_by_category"]["7d"] == {"grocery": {"EUR": 1.12}}
    assert shown["average_purchase"]["30d"] == {"EUR": 33.33}
    assert shown["settled_count"] == {"30d": 3} and shown["merchants"] == {"7d": 2}
    assert values["settled_amount"]["30d"]["USD"] == 10.005  # the internal value is untouched
    purchases = load_one("purchases.v1")
    items = {"recent_purchases": [{"amount": 12.345, "currency": "USD", "ts": 1},
                                  {"amount": 1999.5, "currency": "JPY", "ts": 2}]}
    assert [i["amount"] for i in present(purchases, items)["recent_purchases"]] == [12.34, 2000]
    assert present(purchases, None) is None


def test_the_fast_rounding_path_agrees_with_decimal_half_even_everywhere():
    """``round_amount`` skips Decimal unless the written amount may be a tie; on sums of
    cents, short decimals, ties and arbitrary floats it must equal the Decimal rule."""
    from decimal import ROUND_HALF_EVEN, Decimal

    rng = random.Random(11)
    samples = [sum(round(rng.uniform(0, 500), 2) for _ in range(rng.randrange(1, 30)))
               for _ in range(3_000)]
    samples += [rng.randrange(10**7) / 10 ** rng.randrange(5) for _ in range(3_000)]
    samples += [rng.randrange(10**5) / 1000 + 0.0005 for _ in range(3_000)]  # ties at 3 dp
    samples += [rng.uniform(-1e7, 1e7) for _ in range(3_000)] + [1e22, -0.0, 5e-324]
    for amount in samples:
        for currency, places in (("USD", 2), ("JPY", 0), ("BHD", 3)):
            want = Decimal(repr(amount)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
            got = round_amount(amount, currency)
            assert got == (int(want) if places == 0 else float(want)), (amount, currency)

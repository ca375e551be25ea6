"""The anomaly rules: one hour's profile against the hours promoted before it.

Rules (thresholds in ``AnomalyConfig``, docs/QUALITY.md "Anomaly gate"):

- ``volume``: records in the hour over the seasonal baseline (median of the same hour-of-week
  over the trailing weeks when enough of them were promoted, else of the same hour-of-day over
  the trailing days) outside [volume_min_ratio, volume_max_ratio];
- ``null_rate`` per contract column and ``unknown_field_rate`` per field the contract lacks:
  the hour's rate above the baseline hours' rate by more than the allowed rise;
- ``psi`` per categorical and numeric column: population stability index of the hour against
  the trailing week (numeric columns in the reference's quantile bins) above ``psi_max``;
- ``duplicate_rate`` and ``late_rate``: absolute ceilings.

Plain code, no Great Expectations: every threshold here depends on stored history (seasonal
medians, a merged reference distribution), and GX 1.x has no PSI expectation; the profile is
already counts, so a rule is arithmetic on them.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from mercury.quality.hour_profile import HOUR_MS, HourProfile, merged
from mercury.quality.psi import psi

if TYPE_CHECKING:
    from mercury.config import AnomalyConfig

WEEK_MS = 7 * 24 * HOUR_MS
DAY_MS = 24 * HOUR_MS
# Floor of a bin's share in PSI: a category absent on one side would make it infinite.
PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class Breach:
    rule: str  # volume | null_rate | unknown_field_rate | psi | duplicate_rate | late_rate
    column: str | None  # the column or field it is about, None for whole-hour rules
    observed: float
    threshold: float
    detail: str

    def line(self) -> str:
        where = f"({self.column})" if self.column else ""
        return f"{self.rule}{where}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    stream: str
    hour_ms: int
    breaches: tuple[Breach, ...]
    baseline: str  # hour_of_week (N weeks) | hour_of_day (N days) | none (...)
    notes: tuple[str, ...] = field(default_factory=tuple)  # rules skipped, and why
    # What each ratio rule measured, breached or not (``volume``, ``psi(currency)``...): how
    # far a normal hour stays from its threshold.
    measures: Mapping[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.breaches

    def breaches_json(self) -> list[dict]:
        return [asdict(b) for b in self.breaches]


def seasonal_baseline(hour_ms: int, history: Mapping[int, HourProfile],
                      config: AnomalyConfig) -> tuple[str, list[HourProfile]]:
    """(kind, profiles) of the hours the volume and rate rules compare with. The same hour
    of the week is the right comparison for payments (weekends, paydays), but it needs weeks
    of history; until ``min_weeks`` exist the same hour of the day over the trailing days
    stands in (it still follows the daily cycle), and with too little of that no volume rule
    runs."""
    weekly = [history[h] for h in (hour_ms - k * WEEK_MS
                                   for k in range(1, config.baseline_weeks + 1)) if h in history]
    if len(weekly) >= config.min_weeks:
        return f"hour_of_week ({len(weekly)} weeks)", weekly
    daily = [history[h] for h in (hour_ms - k * DAY_MS
                                  for k in range(1, config.baseline_days + 1)) if h in history]
    if len(daily) >= config.min_days:
        return f"hour_of_day ({len(daily)} days)", daily
    return (f"none ({len(weekly)} of {config.min_weeks} weeks, {len(daily)} of "
            f"{config.min_days} days promoted)"), []


def history_hours(hour_ms: int, config: AnomalyConfig) -> list[int]:
    """The earlier hours ``evaluate`` may read: the seasonal ones and the PSI window."""
    hours = {hour_ms - k * WEEK_MS for k in range(1, config.baseline_weeks + 1)}
    hours.update(hour_ms - k * DAY_MS for k in range(1, config.baseline_days + 1))
    hours.update(hour_ms - k * HOUR_MS for k in range(1, config.psi_window_hours + 1))
    return sorted(hours)


def evaluate(hour: HourProfile, history: Mapping[int, HourProfile],
             config: AnomalyConfig) -> Verdict:
    """Every rule on ``hour``; ``history`` maps hour start -> profile of promoted hours."""
    kind, seasonal = seasonal_baseline(hour.hour_ms, history, config)
    breaches: list[Breach] = []
    notes: list[str] = []
    measures: dict[str, float] = {}
    if seasonal:
        breaches += _volume(hour, seasonal, config, notes, measures)
        breaches += _rates(hour, seasonal, config)
    else:
        notes.append(f"volume, null and unknown-field rates not checked: baseline {kind}")
    window = [history[h] for h in range(hour.hour_ms - config.psi_window_hours * HOUR_MS,
                                        hour.hour_ms, HOUR_MS) if h in history]
    breaches += _distributions(hour, merged(window, hour.stream), config, notes, measures)
    breaches += _ceilings(hour, config)
    return Verdict(hour.stream, hour.hour_ms, tuple(breaches), kind, tuple(notes), measures)


def _volume(hour: HourProfile, seasonal: list[HourProfile], config: AnomalyConfig,
            notes: list[str], measures: dict[str, float]) -> list[Breach]:
    expected = statistics.median(p.records for p in seasonal)
    if expected < config.volume_min_expected:
        notes.append(f"volume not checked: baseline {expected:g} records < "
                     f"volume_min_expected {config.volume_min_expected}")
        return []
    ratio = measures["volume"] = hour.records / expected
    if ratio < config.volume_min_ratio:
        return [Breach("volume", None, ratio, config.volume_min_ratio,
                       f"{hour.records} records, {ratio:.0%} of the baseline median "
                       f"{expected:g} (floor {config.volume_min_ratio:.0%})")]
    if ratio > config.volume_max_ratio:
        return [Breach("volume", None, ratio, config.volume_max_ratio,
                       f"{hour.records} records, {ratio:.0%} of the baseline median "
                       f"{expected:g} (ceiling {config.volume_max_ratio:.0%})")]
    return []


def _rates(hour: HourProfile, seasonal: list[HourProfile],
           config: AnomalyConfig) -> list[Breach]:
    if not hour.records:
        return []
    base_records = sum(p.records for p in seasonal) or 1
    found = []
    for rule, counts_of, rise in (("null_rate", lambda p: p.nulls, config.null_rate_max_rise),
                                  ("unknown_field_rate", lambda p: p.unknown,
                                   config.unknown_field_rate_max_rise)):
        base = merged(seasonal, hour.stream)
        for column, count in sorted(counts_of(hour).items()):
            rate = count / hour.records
            before = counts_of(base).get(column, 0) / base_records
            if rate - before > rise:
                found.append(Breach(rule, column, rate, before + rise,
                                    f"{rate:.1%} of records, baseline {before:.1%} "
                                    f"(allowed rise {rise:.0%})"))
    return found


def _ceilings(hour: HourProfile, config: AnomalyConfig) -> list[Breach]:
    if not hour.records:
        return []
    found = []
    for rule, count, ceiling in (("duplicate_rate", hour.duplicates, config.duplicate_rate_max),
                                 ("late_rate", hour.late, config.late_rate_max)):
        rate = count / hour.records
        if rate > ceiling:
            found.append(Breach(rule, None, rate, ceiling,
                                f"{count} of {hour.records} records ({rate:.1%}, ceiling "
                                f"{ceiling:.0%})"))
    return found


def _distributions(hour: HourProfile, reference: HourProfile, config: AnomalyConfig,
                   notes: list[str], measures: dict[str, float]) -> list[Breach]:
    if hour.records < config.psi_min_records or reference.records < config.psi_min_reference:
        notes.append(f"psi not checked: {hour.records} records in the hour (min "
                     f"{config.psi_min_records}), {reference.records} in the trailing window "
                     f"(min {config.psi_min_reference})")
        return []
    found = []
    for column, counts in sorted(hour.categories.items()):
        ref: Mapping[str, int] = reference.categories.get(column, {})
        keys = sorted(set(counts) | set(ref))
        value = measures[f"psi({column})"] = psi([ref.get(k, 0) for k in keys],
                                                 [counts.get(k, 0) for k in keys], PSI_FLOOR)
        if value > config.psi_max:
            found.append(_psi_breach(column, value, config, _top_moves(ref, counts)))
    for column, bins in sorted(hour.histograms.items()):
        ref_bins = reference.histograms.get(column, [0] * len(bins))
        groups = quantile_groups(ref_bins, config.psi_bins)
        value = measures[f"psi({column})"] = psi([sum(ref_bins[i] for i in g) for g in groups],
                                                 [sum(bins[i] for i in g) for g in groups],
                                                 PSI_FLOOR)
        if value > config.psi_max:
            found.append(_psi_breach(column, value, config, f"over {len(groups)} quantile bins"))
    return found


def _psi_breach(column: str, value: float, config: AnomalyConfig, why: str) -> Breach:
    return Breach("psi", column, value, config.psi_max,
                  f"PSI {value:.3f} against the trailing {config.psi_window_hours} h "
                  f"(max {config.psi_max:g}); {why}")


def _top_moves(ref: Mapping[str, int], now: Mapping[str, int], n: int = 3) -> str:
    """The values whose share moved most, e.g. ``USD 31%->70%``."""
    ref_total, now_total = sum(ref.values()) or 1, sum(now.values()) or 1
    moves = sorted(((now.get(k, 0) / now_total - ref.get(k, 0) / ref_total, k)
                    for k in set(ref) | set(now)), key=lambda m: -abs(m[0]))
    return ", ".join(f"{k} {ref.get(k, 0) / ref_total:.0%}->{now.get(k, 0) / now_total:.0%}"
                     for _, k in moves[:n])


def quantile_groups(bins: Sequence[int], n: int) -> list[list[int]]:
    """Consecutive fine bins grouped so each group holds about 1/n of the mass (the
    reference's quantile bins); empty leading and trailing fine bins join their neighbours."""
    total = sum(bins)
    groups: list[list[int]] = [[]]
    filled = 0
    for i, count in enumerate(bins):
        groups[-1].append(i)
        filled += count
        if total and filled >= total * len(groups) / n and len(groups) < n:
            groups.append([])
    if not groups[-1]:
        groups.pop()
    return groups


def profiles_by_hour(profiles: Iterable[HourProfile]) -> dict[int, HourProfile]:
    return {p.hour_ms: p for p in profiles}

"""Drift: PSI math on inputs with known answers, and the job on a training set and a day of
served values drawn from one distribution with one feature shifted on purpose.

The served values go through the real path: inference_audit records produced to the local
event log and validated into the Iceberg audit table by the lake loader, then read back by
the drift job. The training set is a Parquet folder in ``spark_jobs.training_set``'s layout,
written with pyarrow (building it with Spark would need a feature history to join; its layout
is what matters here).
"""

from __future__ import annotations

import math

import orjson
import pytest
from pydantic import ValidationError

from mercury.config import DriftConfig, DriftModelConfig, load_settings
from mercury.drift import measure as drift
from mercury.drift.metrics import write_metrics
from mercury.quality.psi import MISSING, OTHER, Bins, bins_from, psi
from tests.drift_fixtures import (
    DAY0_MS,
    DAY_MS,
    MODEL,
    SETS,
    audit_records,
    make_world,
    write_training_set,
)

SHIFTED = "declines.v1:approved_count.1d"


# ---- PSI on known inputs -------------------------------------------------------------------

def test_identical_distributions_give_zero():
    assert psi([10, 20, 30, 40], [1, 2, 3, 4], 1e-4) == 0.0  # same shares, other totals


def test_a_two_bin_example_gives_its_hand_computed_value():
    # 0.3 ln(0.8/0.5) + (-0.3) ln(0.2/0.5) = 0.141001 + 0.274887
    assert psi([50, 50], [80, 20], 1e-4) == pytest.approx(0.4158883, abs=1e-7)
    # PSI is not symmetric in general, but this pair is: swapping sides gives the same.
    assert psi([80, 20], [50, 50], 1e-4) == pytest.approx(0.4158883, abs=1e-7)


def test_an_empty_bin_is_floored_at_epsilon_not_infinite():
    # Expected share 0 in the second bin: (0.5 - 1) ln(0.5) + (0.5 - 1e-4) ln(0.5 / 1e-4).
    value = psi([100, 0], [50, 50], 1e-4)
    assert math.isfinite(value)
    assert value == pytest.approx(4.6043185, abs=1e-6)
    assert psi([0, 0, 5], [0, 0, 5], 1e-4) == 0.0  # bins both sides leave empty add nothing


def test_psi_refuses_what_it_cannot_compare():
    with pytest.raises(ValueError, match="2 expected bins but 3 actual"):
        psi([1, 1], [1, 1, 1], 1e-4)
    with pytest.raises(ValueError, match="no values"):
        psi([1, 1], [0, 0], 1e-4)


def test_numeric_bins_are_training_quantiles_and_ties_stay_together():
    bins = bins_from([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], quantiles=5)
    # 20% quantiles 0, 0, 0, 2: merged, so "0" is one bin and the rest split at 2.
    assert bins == Bins("numeric", edges=(0.0, 2.0))
    assert bins.labels == ("(-inf, 0]", "(0, 2]", "(2, inf]", MISSING, OTHER)
    assert bins.counts([0, 1, 2, 2.5, 99, None, "x"], missing=2) == [1, 2, 2, 3, 1]


def test_categorical_bins_put_unseen_categories_in_other():
    bins = bins_from(["a", "b", "a", None, True], quantiles=10)
    assert bins.kind == "categorical" and bins.categories == ("a", "b", "true")
    assert bins.counts(["a", "c", None, False, True]) == [1, 0, 1, 1, 2]


# ---- the job ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registered model version, its training set (3,000 users), and two days of served
    values (3,000 requests each): day 1 from the same distribution, day 2 with the daily
    approvals shifted. Also a request of another model version and one of another set
    version, to be left out."""
    path = make_world(tmp_path_factory.mktemp("drift"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(path))
        return load_settings()


def _day(settings, day: int) -> drift.DriftReport:
    (report,) = drift.measure(settings, DAY0_MS + day * DAY_MS, DAY0_MS + (day + 1) * DAY_MS)
    return report


def test_a_shifted_feature_drifts_and_the_rest_stay_stable(world):
    report = _day(world, 1)
    by_name = {f.feature: f for f in report.features}
    print("\n".join(report.table()))
    assert report.requests == 3000 and report.compared == {"declines.v1": 3000,
                                                           "engagement.v1": 3000}
    assert by_name[SHIFTED].psi > 0.2 and by_name[SHIFTED].status == drift.DRIFTED
    others = [f for f in report.features if f.feature != SHIFTED]
    assert len(others) >= 15  # every leaf of both sets was judged, not only a few
    assert all(f.psi is not None and f.psi < 0.1 and f.status == drift.STABLE for f in others), \
        [(f.feature, f.psi, f.status) for f in others if f.psi is None or f.psi >= 0.1]
    as_json = orjson.loads(orjson.dumps(report.to_dict()))
    assert as_json["drifted"] == [SHIFTED]
    assert as_json["compared"] == {"declines.v1": 3000, "engagement.v1": 3000}


def test_the_same_distribution_drifts_nowhere(world):
    report = _day(world, 0)
    assert report.requests == 3000 + 1  # the other set version is read, then left out
    assert report.other_version == {"declines.v2": 1}
    worst = max(report.features, key=lambda f: f.psi or 0.0)
    print(f"worst PSI of a day from the training distribution: {worst}")
    assert worst.psi < 0.1, worst
    assert report.with_status(drift.DRIFTED, drift.MODERATE) == []
    # Instants are not distributions: the card lock's time is left out, its state compared.
    names = {f.feature for f in report.features}
    assert "engagement.v1:card_lock.event_type" in names
    assert not any(name.endswith(".ts") for name in names)


def test_a_shifted_category_drifts_and_the_rest_stay_stable(tmp_path):
    """The card lock's state (a category, and its absence in the missing bin) shifted."""
    report = drift.compare(_profile(tmp_path, users=3000),
                           audit_records(3000, seed=7, shift_lock=True), DriftConfig())
    assert [f.feature for f in report.with_status(drift.DRIFTED)] == [
        "engagement.v1:card_lock.event_type"]
    lock = next(f for f in report.features if f.feature == "engagement.v1:card_lock.event_type")
    assert lock.kind == "categorical" and lock.psi > 0.2
    assert max(f.psi or 0.0 for f in report.features if f is not lock) < 0.1


def test_a_day_nobody_was_served_reports_every_feature_not_served(world):
    report = _day(world, 5)
    assert report.requests == 0 and report.features
    assert {f.status for f in report.features} == {drift.NOT_SERVED}


def test_an_unregistered_model_version_is_refused_naming_the_registry(world):
    with pytest.raises(ValueError, match=rf"not in drift.models \(registered: \['{MODEL}'\]\)"):
        drift.measure(world, DAY0_MS, DAY0_MS + DAY_MS, ["assistant-llm-2026-10"])


def _profile(tmp_path, users=400):
    training = write_training_set(tmp_path / "training", users=users, seed=1)
    model = DriftModelConfig(training_set=str(training), feature_sets=SETS)
    return drift.training_profile(MODEL, model, quantiles=10)


def test_features_absent_from_training_degraded_and_other_sets_are_reported(tmp_path):
    profile = _profile(tmp_path)
    rows = audit_records(200, seed=9)
    for row in rows[:150]:  # a feature the model was never trained on
        served = orjson.loads(row["served_features_json"])
        served["declines"]["declined_amount"] = {"1d": {"EUR": 12.5}}
        served["documents"] = {"hits": 3}  # a set outside the model's feature sets
        row["served_features_json"] = orjson.dumps(served).decode()
        row["feature_versions"] = {**row["feature_versions"], "documents": 1}
    for row in rows[150:160]:
        row["degraded_parts"] = ["features.engagement:default:store_down"]
    report = drift.compare(profile, rows, DriftConfig(min_served=100))
    absent = report.with_status(drift.ABSENT)
    assert [(f.feature, f.served, f.psi) for f in absent] == [
        ("declines.v1:declined_amount.1d.EUR", 150, None)]
    assert report.degraded == {"engagement": 10}
    assert report.compared == {"declines.v1": 200, "engagement.v1": 190}


def test_too_few_served_values_are_reported_not_judged(tmp_path):
    report = drift.compare(_profile(tmp_path), audit_records(20, seed=9, shift=True),
                           DriftConfig(min_served=100))
    shifted = next(f for f in report.features if f.feature == SHIFTED)
    assert shifted.status == drift.TOO_FEW and shifted.served == 20 and shifted.psi > 0.2


def test_a_training_set_without_the_registered_sets_is_refused(tmp_path):
    training = write_training_set(tmp_path / "training", users=10, seed=1)
    model = DriftModelConfig(training_set=str(training), feature_sets=("spending.v1",))
    with pytest.raises(ValueError, match=r"drift.models\['m'\]: the training set .* has no "
                                         r"columns \['spending__authorised_amount'"):
        drift.training_profile("m", model, quantiles=10)
    missing = DriftModelConfig(training_set=str(tmp_path / "nowhere"), feature_sets=SETS)
    with pytest.raises(ValueError, match="cannot read the training set"):
        drift.training_profile("m", missing, quantiles=10)


def test_the_metrics_file_has_a_psi_per_judged_feature_and_the_run_time(tmp_path):
    report = drift.compare(_profile(tmp_path), audit_records(300, seed=9, shift=True),
                           DriftConfig())
    text = write_metrics([report], tmp_path / "m" / "drift.prom", now_s=1_800_000_000).read_text()
    line = next(x for x in text.splitlines() if x.startswith("mercury_feature_drift_psi{")
                and 'feature="approved_count.1d"' in x)
    assert f'model_version="{MODEL}"' in line and 'feature_set="declines.v1"' in line
    assert float(line.rsplit(" ", 1)[1]) > 0.2
    assert (f'mercury_feature_drift_last_success_timestamp_seconds{{model_version="{MODEL}"}} '
            "1.8e+09") in text


def test_drift_config_rules():
    with pytest.raises(ValidationError, match="psi_warn"):
        DriftConfig(psi_warn=0.3, psi_drift=0.2)
    with pytest.raises(ValidationError, match=r"\['spending'\] are not refs"):
        DriftModelConfig(training_set="x", feature_sets=("spending",))
    assert (DriftConfig().psi_warn, DriftConfig().psi_drift) == (0.1, 0.2)


def test_the_alert_rule_fires_at_the_configured_drift_threshold():
    """The rule cannot read the settings: its number is held to ``drift.psi_drift`` here."""
    import re

    import yaml

    from mercury.config import REPO_ROOT

    rules = yaml.safe_load((REPO_ROOT / "infra/monitoring/rules/drift.yml").read_text())
    (expr,) = [r["expr"] for g in rules["groups"] for r in g["rules"]
               if r.get("alert") == "FeatureDriftDetected"]
    threshold = re.fullmatch(r".*mercury_feature_drift_psi\) > ([0-9.]+)\s*", expr, re.S)
    assert threshold and float(threshold.group(1)) == DriftConfig().psi_drift

"""The hourly anomaly gate: generated hours pass, broken ones are quarantined naming the rule,
and the recorded override releases them.

Real parts: the repository's traffic generator (five simulated days, seeded), the local
Postgres (the ledger, in a schema of this test's own) and the file event log. Nothing is
mocked. The first four days are gated in order to build the baseline the last day is judged
against; the false-positive rate over every hour judged with a baseline is printed (run with
``-s`` to see it) and held under a bound.
"""

from __future__ import annotations

import random
from collections import defaultdict

import orjson
import pytest

from mercury import cli
from mercury.config import AnomalyConfig, load_settings
from mercury.contracts.validation import validator
from mercury.eventlog import open_producer
from mercury.eventlog.base import EventProducer
from mercury.generator.knobs import DAY_MS, Knobs
from mercury.generator.traffic import TrafficGenerator
from mercury.quality import quarantine
from mercury.quality.anomaly import (
    evaluate,
    history_hours,
    quantile_groups,
    seasonal_baseline,
)
from mercury.quality.hour_gate import (
    METRICS_FILE,
    HourQuarantined,
    gate_hour,
    hour_label,
    promote_hour,
    require_promoted,
)
from mercury.quality.hour_profile import HOUR_MS, HourProfile, hour_start, profile_hour
from tests.airflow_fixtures import dags_test
from tests.conftest import write_config

STREAMS = ("transactions", "user_activity")
KNOBS = Knobs(events=260_000, span_ms=5 * DAY_MS, documents=0, seed=18)
HISTORY_HOURS = 4 * 24  # gated first, in order: the baseline of day 5
DAY5 = KNOBS.start_ms + HISTORY_HOURS * HOUR_MS
NORMAL = [DAY5 + k * HOUR_MS for k in range(10)]
DROPPED, SHIFTED, AFTER = (DAY5 + k * HOUR_MS for k in (10, 11, 12))


class _Capture(EventProducer):
    def __init__(self) -> None:
        self.sent: dict[str, list[bytes]] = defaultdict(list)

    def send(self, stream: str, value: bytes, key: str | None = None) -> None:
        self.sent[stream].append(value)

    def flush(self) -> None:
        return None


@pytest.fixture(scope="module")
def hours() -> dict[str, dict[int, list[dict]]]:
    """stream -> arrival hour -> the valid records that arrived in it."""
    capture = _Capture()
    TrafficGenerator(KNOBS, capture).run()
    by_hour: dict[str, dict[int, list[dict]]] = {}
    for stream in STREAMS:
        check = validator("transaction" if stream == "transactions" else stream)
        grouped: dict[int, list[dict]] = defaultdict(list)
        for raw in capture.sent[stream]:
            verdict = check.validate_bytes(raw)
            if verdict.ok and verdict.record is not None:
                grouped[hour_start(verdict.record["ingest_ts"])].append(verdict.record)
        by_hour[stream] = dict(grouped)
    return by_hour


@pytest.fixture(scope="module")
def gated(hours, tmp_path_factory):
    """Settings, and the verdicts of the four history days, gated hour by hour."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MERCURY_CONFIG", str(write_config(tmp_path_factory.mktemp("gate"))))
        settings = load_settings()
    verdicts = {stream: [gate_hour(settings, stream, h, hours[stream].get(h, []))
                         for h in range(KNOBS.start_ms, DAY5, HOUR_MS)] for stream in STREAMS}
    return settings, verdicts


def _rules(result) -> set[tuple[str, str | None]]:
    return {(b.rule, b.column) for b in result.verdict.breaches}


def test_ten_normal_hours_pass_and_the_false_positive_rate_is_reported(hours, gated):
    settings, history = gated
    for stream in STREAMS:
        normal = [gate_hour(settings, stream, h, hours[stream][h]) for h in NORMAL]
        assert [r.status for r in normal] == ["promoted"] * 10, \
            [(hour_label(r.verdict.hour_ms), r.verdict.breaches) for r in normal]
        assert all(r.verdict.baseline.startswith("hour_of_day (") for r in normal)
        judged = [r for r in history[stream] if not r.verdict.baseline.startswith("none")]
        judged += normal
        false_positives = [r for r in judged if not r.verdict.passed]
        rate = len(false_positives) / len(judged)
        print(f"\nanomaly gate, {stream}: {len(false_positives)} of {len(judged)} normal "
              f"generated hours judged against a baseline were quarantined "
              f"(false-positive rate {rate:.1%}); the ten hours of day 5: 0 of 10")
        volumes = [r.verdict.measures["volume"] for r in judged]
        psis = {name: max(r.verdict.measures.get(name, 0.0) for r in judged)
                for name in judged[-1].verdict.measures if name.startswith("psi")}
        print(f"  volume / baseline {min(volumes):.2f}..{max(volumes):.2f} (allowed "
              f"{settings.anomaly.volume_min_ratio}..{settings.anomaly.volume_max_ratio}); "
              f"highest PSI {', '.join(f'{k} {v:.3f}' for k, v in psis.items())} "
              f"(max {settings.anomaly.psi_max})")
        # Three days pass before a volume baseline exists (min_days 3): 24 * 2 hours judged
        # with it, at least, before day 5.
        assert len(judged) >= 24 + 10
        assert rate <= 0.02, [r.verdict.breaches for r in false_positives]


def test_an_hour_with_80_percent_fewer_events_is_quarantined_by_the_volume_rule(hours, gated):
    settings, _ = gated
    records = hours["transactions"][DROPPED]
    kept = records[::5]  # every fifth record: 80% fewer
    result = gate_hour(settings, "transactions", DROPPED, kept)
    assert result.status == "quarantined"
    assert _rules(result) == {("volume", None)}
    [breach] = result.verdict.breaches
    print(f"\n80% fewer transactions in {hour_label(DROPPED)}: {breach.line()}")
    assert breach.observed == pytest.approx(0.2, abs=0.05)
    assert breach.threshold == settings.anomaly.volume_min_ratio
    with pytest.raises(HourQuarantined, match=r"volume: \d+ records, 2\d% of the baseline"):
        require_promoted(settings, "transactions", DROPPED)


def test_a_shifted_currency_mix_is_quarantined_by_psi_naming_the_column(hours, gated):
    settings, _ = gated
    rng = random.Random(5)
    shifted = [dict(r, currency="USD") if r["currency"] != "USD" and rng.random() < 0.7
               else r for r in hours["transactions"][SHIFTED]]
    result = gate_hour(settings, "transactions", SHIFTED, shifted)
    assert result.status == "quarantined"
    assert _rules(result) == {("psi", "currency")}
    [breach] = result.verdict.breaches
    print(f"\ncurrency mix shifted in {hour_label(SHIFTED)}: {breach.line()}")
    assert breach.observed > settings.anomaly.psi_max
    assert "USD" in breach.detail  # the value that moved most is named
    # The same hour unshifted passes: it is the mix, not the hour, that broke the rule.
    unshifted = profile_hour("transactions", SHIFTED, hours["transactions"][SHIFTED],
                             ("currency", "event_type", "country"), ("amount",))
    assert evaluate(unshifted, _history(settings, "transactions", SHIFTED),
                    settings.anomaly).passed


def _history(settings, stream: str, hour: int) -> dict[int, HourProfile]:
    with quarantine.connect(settings) as conn:
        return quarantine.baseline_profiles(conn, settings, stream,
                                            history_hours(hour, settings.anomaly))


def test_the_override_releases_a_quarantined_hour_and_is_recorded(hours, gated, monkeypatch,
                                                                  capsys):
    settings, _ = gated
    hour = DAY5 + 13 * HOUR_MS
    monkeypatch.setenv("MERCURY_CONFIG", str(settings.data_dir.parent / "mercury.yaml"))
    gate_hour(settings, "transactions", hour, hours["transactions"][hour][::5])
    metrics = (settings.data_dir / "metrics" / METRICS_FILE).read_text()
    assert 'mercury_quality_quarantined_hours{stream="transactions"} ' in metrics
    held_before = _gauge(metrics, 'mercury_quality_quarantined_hours{stream="transactions"}')
    assert held_before >= 1
    assert _gauge(metrics, 'mercury_quality_quarantined_hours{stream="user_activity"}') == 0

    assert cli.main(["quality", "held", "--stream", "transactions"]) == 0
    assert f"transactions {hour_label(hour)}\n  volume: " in capsys.readouterr().out
    assert cli.main(["quality", "release", "--stream", "transactions", "--hour",
                     hour_label(hour), "--reason", "card network outage INC-7, confirmed "
                     "with payments", "--by", "oncall-a"]) == 0
    assert "released by oncall-a over volume" in capsys.readouterr().out
    require_promoted(settings, "transactions", hour)  # no longer raises
    with quarantine.connect(settings) as conn:
        assert quarantine.releases(conn, settings, "transactions", hour) == [
            ("oncall-a", "card network outage INC-7, confirmed with payments")]
    after = (settings.data_dir / "metrics" / METRICS_FILE).read_text()
    assert _gauge(after, 'mercury_quality_quarantined_hours{stream="transactions"}') == \
        held_before - 1
    # Gating the hour again keeps the override; releasing twice is refused, naming why.
    again = gate_hour(settings, "transactions", hour, hours["transactions"][hour][::5])
    assert again.status == "released" and not again.verdict.passed
    assert cli.main(["quality", "release", "--stream", "transactions", "--hour",
                     hour_label(hour), "--reason", "again"]) == 1
    assert "is released: only a quarantined hour can be released" in capsys.readouterr().err


def test_quarantined_hours_stay_out_of_the_baseline(gated):
    settings, _ = gated
    outage = DAY5 + 14 * HOUR_MS
    result = gate_hour(settings, "user_activity", outage, [])  # nothing arrived
    assert result.status == "quarantined" and _rules(result) == {("volume", None)}
    # The same hour a day later is judged against the four earlier days, not the outage.
    next_day = outage + DAY_MS
    kind, chosen = seasonal_baseline(next_day, _history(settings, "user_activity", next_day),
                                     settings.anomaly)
    assert kind == "hour_of_day (4 days)"
    assert outage not in {p.hour_ms for p in chosen} and min(p.records for p in chosen) > 500


def test_the_promoting_step_reads_the_hour_from_the_event_log(hours, gated, monkeypatch,
                                                              capsys):
    settings, _ = gated
    normal, dropped = DAY5 + 15 * HOUR_MS, DAY5 + 16 * HOUR_MS
    with open_producer(settings, writer_id="gate_test") as producer:
        for record in hours["transactions"][normal] + hours["transactions"][dropped][::5]:
            producer.send("transactions", orjson.dumps(record), key=record["user_id"])
        producer.send("transactions", b'{"not": "a transaction"}')  # dead letters are not counted
    assert promote_hour(settings, "transactions", normal).verdict.passed
    monkeypatch.setenv("MERCURY_CONFIG", str(settings.data_dir.parent / "mercury.yaml"))
    assert cli.main(["quality", "gate", "--stream", "transactions", "--hour",
                     hour_label(dropped)]) == 1
    err = capsys.readouterr().err
    assert f"transactions hour {hour_label(dropped)} is quarantined: volume: " in err
    assert "mercury quality release --stream transactions" in err


# --- the rules on literal profiles ------------------------------------------------------------


def test_quantile_groups_split_the_reference_mass_evenly():
    groups = quantile_groups([0, 10, 10, 0, 10, 10, 0], 4)
    assert [[i for i in g if i in (1, 2, 4, 5)] for g in groups] == [[1], [2], [4], [5]]
    assert sorted(i for g in groups for i in g) == list(range(7))


def _profile(hour_ms: int, records: int) -> HourProfile:
    return HourProfile("transactions", hour_ms, records=records)


def test_the_baseline_is_the_hour_of_week_once_enough_weeks_exist():
    config = AnomalyConfig()
    hour = 100 * 7 * DAY_MS
    days = {hour - k * DAY_MS: _profile(hour - k * DAY_MS, 100) for k in range(1, 8)}
    kind, chosen = seasonal_baseline(hour, days, config)
    assert kind == "hour_of_day (7 days)" and len(chosen) == 7
    weeks = {hour - k * 7 * DAY_MS: _profile(hour - k * 7 * DAY_MS, 400) for k in (1, 2)}
    kind, chosen = seasonal_baseline(hour, {**days, **weeks}, config)
    assert kind == "hour_of_week (2 weeks)" and {p.records for p in chosen} == {400}
    # Against the weekly baseline a weekday-sized hour is a volume drop (100 of 400).
    verdict = evaluate(_profile(hour, 100), {**days, **weeks}, config)
    assert [(b.rule, round(b.observed, 2)) for b in verdict.breaches] == [("volume", 0.25)]
    kind, chosen = seasonal_baseline(hour, {}, config)
    assert kind.startswith("none") and chosen == []


def _tx(n: int, hour_ms: int, **extra) -> dict:
    record = {"event_id": f"e{n}", "user_id": "u", "account_id": "a", "merchant_id": "m",
              "amount": 10.0, "currency": "EUR", "event_type": "AUTH",
              "event_ts": hour_ms + 1_000, "ingest_ts": hour_ms + 2_000, "risk_score": 0.1,
              "mcc_code": "5411", "country": "FR", "purchase_id": "p"}
    record.update(extra)
    return record


def test_null_unknown_duplicate_and_late_rates_name_their_rule_and_column():
    config = AnomalyConfig()
    hour = 1000 * HOUR_MS
    history = {hour - k * DAY_MS: profile_hour("transactions", hour - k * DAY_MS,
                                               [_tx(i, hour - k * DAY_MS) for i in range(100)])
               for k in range(1, 4)}
    bad = [_tx(i, hour, purchase_id=None if i < 30 else "p", **({"promo_code": "X"} if i < 20
                                                                  else {}))
           for i in range(68)]
    bad += [_tx(i, hour) for i in range(20)]  # 20 repeat ids already in the hour
    bad += [_tx(100 + i, hour, event_ts=hour - 2 * HOUR_MS) for i in range(12)]  # 2 h late
    verdict = evaluate(profile_hour("transactions", hour, bad), history, config)
    found = {(b.rule, b.column): round(b.observed, 2) for b in verdict.breaches}
    assert found == {("null_rate", "purchase_id"): 0.30, ("unknown_field_rate", "promo_code"): 0.20,
                     ("duplicate_rate", None): 0.20, ("late_rate", None): 0.12}
    assert verdict.baseline == "hour_of_day (3 days)"


def test_a_record_from_another_hour_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"record 0 \(e0\): ingest_ts 2000 is not in the hour"):
        profile_hour("transactions", HOUR_MS, [_tx(0, 0)])


def _gauge(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in\n{text}")


def test_the_dag_gates_every_configured_stream_through_its_step(hours, gated, capsys):
    """The quality_gate DAG maps its task over a constant (no mercury at parse time): held
    here to the configured streams; its step promotes a normal hour and says so."""
    import sys

    from mercury.config import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    try:
        from mercury_airflow.tasks.quality_gate import GATED_STREAMS, gate
    finally:
        sys.path.remove(str(REPO_ROOT / "plugins"))
    assert GATED_STREAMS == AnomalyConfig().streams
    settings, _ = gated
    hour = DAY5 + 15 * HOUR_MS  # written to the event log by the test above, or now
    if not (settings.event_log.root / "transactions").exists():
        with open_producer(settings, writer_id="gate_test") as producer:
            for record in hours["transactions"][hour]:
                producer.send("transactions", orjson.dumps(record))
    done = gate(settings, "transactions", hour)
    assert done["status"] == "promoted" and 0.5 < done["measures"]["volume"] < 2
    assert f"transactions {hour_label(hour)}: promoted (baseline hour_of_day (4 days); volume" \
        in capsys.readouterr().out


@pytest.mark.slow
def test_the_dag_run_fails_on_a_quarantined_hour_without_retrying(hours, gated, tmp_path,
                                                                   airflow_home):
    """`airflow dags test quality_gate <hour>`: the run's data interval is the hour gated; a
    held hour fails its task at once (no retries: the same hour would be judged the same),
    naming the rule and the release command."""
    import os
    import subprocess
    from datetime import UTC, datetime

    from mercury.stack.airflow_standalone import airflow_binary, airflow_env
    from mercury.stack.base import StackError

    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    settings, _ = gated
    held = DAY5 + 17 * HOUR_MS
    with open_producer(settings, writer_id="gate_dag") as producer:
        for record in hours["transactions"][held][::5] + hours["user_activity"][held]:
            stream = "transactions" if "account_id" in record else "user_activity"
            producer.send(stream, orjson.dumps(record))
    env = {**os.environ, **airflow_env(settings, home=airflow_home(tmp_path / "airflow")),
           "MERCURY_CONFIG": str(settings.data_dir.parent / "mercury.yaml")}

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    logical = datetime.fromtimestamp((held + HOUR_MS) / 1000, UTC).isoformat()
    run = airflow(*dags_test("quality_gate", logical))
    output = run.stdout + run.stderr
    assert f"transactions hour {hour_label(held)} is quarantined: volume: " in output, \
        output[-5000:]
    assert f"user_activity {hour_label(held)}: promoted (baseline hour_of_day" in output, \
        output[-5000:]
    assert "state=failed" in output or run.returncode != 0, output[-3000:]
    assert "up_for_retry" not in output.lower()
    with quarantine.connect(settings) as conn:
        assert quarantine.get(conn, settings, "transactions", held).status == "quarantined"
        assert quarantine.get(conn, settings, "user_activity", held).status == "promoted"

"""Validating streams into the lake: nothing lost, nothing doubled, safe to re-run."""

import orjson

from mercury.eventlog.file_log import FileEventReader
from mercury.generator.anomalies import TEST_PAN as PAN
from mercury.generator.knobs import Knobs
from mercury.generator.run import generate
from mercury.lake import tables
from mercury.lake.load import load_stream
from mercury.quality.reconcile import dead_letters, reconcile
from tests.conftest import metric_samples

STREAMS = ["transactions", "user_activity", "risk_signals"]


def test_dead_letters_match_the_manifest_and_reloading_changes_nothing(tmp_settings):
    knobs = Knobs(events=12_000, users=400, seed=5, malformed_rate=0.03, duplicate_rate=0.08)
    run = generate(tmp_settings, knobs, with_postgres=False, show_progress=False)
    manifest = run.manifest.as_dict()

    reports = {s: load_stream(tmp_settings, s) for s in STREAMS}
    check = reconcile(manifest, tmp_settings.event_log.root, STREAMS)
    assert check.ok, (check.missing[:5], check.unexpected[:5], check.repeated[:5])
    assert check.expected == check.found
    assert sum(check.expected.values()) == sum(len(v) for v in manifest["malformed"].values())

    # The lake holds each valid event exactly once, duplicates collapsed.
    broken = {n["event_id"] for notes in manifest["malformed"].values() for n in notes}
    for stream in STREAMS:
        ids = tables.read(tmp_settings, stream).column("event_id").to_pylist()
        assert len(ids) == len(set(ids))
        expected = run.manifest.generated[stream] - sum(
            1 for notes in manifest["malformed"].values() for n in notes if n["stream"] == stream)
        assert len(ids) == expected
        assert not broken & set(ids)
        assert reports[stream].read == run.manifest.lines[stream]

    # Schema-evolved records went in; their unknown fields were reported, not fatal. The pan
    # a producer added was dropped before the lake, reported by path and rule only.
    assert reports["transactions"].unknown_fields["wallet_type"] > 0
    assert reports["transactions"].dropped_fields["pan (name_card_number)"] > 0
    lake = tables.read(tmp_settings, "transactions")
    assert "pan" not in lake.column_names
    assert set(lake.column("card_last4").to_pylist()) <= {None, "****"}  # card data masked
    assert PAN not in reports["transactions"].summary()

    # Prometheus sees the same counts (the dead-letter SLI), per stream and rule.
    samples = metric_samples(tmp_settings.metrics_dir / "lake_load_transactions.prom")
    mine = frozenset({("stream", "transactions"), ("validator", "lake_loader")})
    assert samples[("mercury_stream_records_total", mine)] == reports["transactions"].read
    assert {dict(labels)["rule"]: value for (name, labels), value in samples.items()
            if name == "mercury_dead_letters_total"} == reports["transactions"].dead_letters
    assert samples[("mercury_lake_rows_loaded_total", frozenset({("stream", "transactions")}))] \
        == reports["transactions"].inserted

    # A second load reads nothing new; a fresh consumer group re-reading everything
    # (a replay) adds no rows and no second dead letter per position.
    again = load_stream(tmp_settings, "transactions")
    assert again.read == 0
    replay = load_stream(tmp_settings, "transactions", group="replay")
    assert replay.inserted == 0
    letters = dead_letters(tmp_settings.event_log.root, "transactions")
    first_pass = sum(n for label, n in check.found.items() if label.startswith("transactions/"))
    # The replay wrote each dead letter again under the same id: a consumer keyed by dlq_id
    # (the lake table, the replay tool) keeps one.
    assert len(letters) == 2 * first_pass
    assert len({d["dlq_id"] for d in letters}) == first_pass
    # The counters kept adding across the loads (each a process of its own in production).
    again_samples = metric_samples(tmp_settings.metrics_dir / "lake_load_transactions.prom")
    assert again_samples[("mercury_stream_records_total", mine)] \
        == reports["transactions"].read + replay.read


def test_a_dead_letter_keeps_the_raw_payload_rule_and_position(tmp_settings):
    from mercury.eventlog import open_producer

    producer = open_producer(tmp_settings, "t")
    good = {"event_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "user_id": "usr_1",
            "account_id": "acc_1", "merchant_id": "mch_1", "amount": 5.0, "currency": "USD",
            "event_type": "AUTH", "event_ts": 1_793_491_200_000, "ingest_ts": 1_793_491_200_100,
            "risk_score": 0.1, "mcc_code": "5411", "country": "US"}
    producer.send("transactions", orjson.dumps(good))
    bad_currency = {**good, "currency": "US$", "event_id": "2b4e28ba-2fa1-41d2-883f-0016d3cca427"}
    producer.send("transactions", orjson.dumps(bad_currency))
    producer.send("transactions", b'{"event_id": "3b4e28ba-2fa1-41d2-883f-0016d3cca427", "amo')
    producer.flush()
    report = load_stream(tmp_settings, "transactions", now_ms=lambda: 42)
    assert (report.valid, dict(report.dead_letters)) == (1, {"bad_currency": 1, "not_json": 1})
    letters = {d["rule"]: d for d in dead_letters(tmp_settings.event_log.root, "transactions")}
    assert letters["bad_currency"]["field"] == "currency"
    assert letters["bad_currency"]["source_position"] == "transactions/part-t-00000001.jsonl:2"
    assert letters["not_json"]["event_id"] == "3b4e28ba-2fa1-41d2-883f-0016d3cca427"
    assert letters["not_json"]["raw_payload"].endswith('"amo')
    assert letters["not_json"]["failed_at"] == 42
    assert [m.position for m in FileEventReader(tmp_settings.event_log.root).read(
        "transactions.dlq")] == ["transactions.dlq/part-lakeloader-00000001.jsonl:1",
                                 "transactions.dlq/part-lakeloader-00000001.jsonl:2"]

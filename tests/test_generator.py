"""The traffic generator: determinism, anomaly rates, the manifest, the purchase lifecycle."""

import hashlib
import random
from collections import Counter, defaultdict

import orjson
import psycopg
import pytest

from mercury.contracts.validation import validator
from mercury.eventlog.file_log import FileEventProducer, FileEventReader
from mercury.generator.knobs import HOUR_MS, KnobError, Knobs, parse_duration, parse_range
from mercury.generator.traffic import TrafficGenerator

STREAMS = ("transactions", "user_activity", "risk_signals", "knowledge_documents")
SUBJECTS = {"transactions": "transaction", "user_activity": "user_activity",
            "risk_signals": "risk_signal", "knowledge_documents": "knowledge_document_change"}


def _parsed(message):
    try:
        return orjson.loads(message.value)
    except orjson.JSONDecodeError:
        return None  # one of the injected not_json records


def _run(root, **knobs):
    return TrafficGenerator(Knobs(**knobs), FileEventProducer(root, "gen", fsync=False)).run()


def _digest(root):
    h = hashlib.sha256()
    for stream in STREAMS:
        for path in FileEventReader(root).files(stream):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    manifest = _run(root, events=40_000, users=800, seed=11, malformed_rate=0.02)
    messages = {s: list(FileEventReader(root).read(s)) for s in STREAMS}
    return root, manifest, messages


def test_same_seed_gives_byte_identical_output(tmp_path):
    _run(tmp_path / "a", events=5_000, seed=3)
    _run(tmp_path / "b", events=5_000, seed=3)
    _run(tmp_path / "c", events=5_000, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_every_line_is_accounted_for(world):
    _, manifest, messages = world
    for stream in STREAMS:
        assert len(messages[stream]) == manifest.lines[stream]
    assert sum(manifest.lines.values()) == sum(manifest.generated.values()) + len(
        manifest.duplicates)
    assert sum(manifest.generated.values()) == 40_000


def test_anomaly_rates_are_within_tolerance_of_the_knobs(world):
    _, manifest, _ = world
    n = sum(manifest.generated.values())
    breakable = n - manifest.generated["knowledge_documents"]
    malformed = sum(len(v) for v in manifest.malformed.values())
    # binomial counts: 4 standard deviations of tolerance
    for observed, p, total in ((len(manifest.duplicates), 0.05, n - malformed),
                               (len(manifest.late), 0.02, n),
                               (len(manifest.out_of_order), 0.10, n),
                               (malformed, 0.02, breakable),
                               (len(manifest.evolved), 0.03, breakable)):
        sd = (total * p * (1 - p)) ** 0.5
        assert abs(observed - total * p) < 4 * sd, (observed, p, total)
    kinds = {k: len(v) for k, v in manifest.malformed.items()}
    assert set(kinds) == {"wrong_type", "missing_required_field", "unknown_enum",
                          "bad_currency", "not_json"}
    assert all(count > 10 for count in kinds.values()), kinds


def test_manifest_positions_point_at_the_broken_lines(world):
    """Each malformed record sits at its recorded position and fails with the rule its kind
    names; every other line is valid."""
    _, manifest, messages = world
    broken = {n["position"]: kind for kind, notes in manifest.malformed.items() for n in notes}
    for stream in ("transactions", "user_activity", "risk_signals"):
        check = validator(SUBJECTS[stream])
        for message in messages[stream]:
            verdict = check.validate_bytes(message.value)
            expected = broken.get(message.position)
            assert verdict.rule == expected, (message.position, verdict.message)


def test_duplicates_are_identical_bytes_arriving_later(world):
    _, manifest, messages = world
    by_position = {m.position: m.value for s in STREAMS for m in messages[s]}
    first_seen = {}
    for s in STREAMS:
        for m in messages[s]:
            first_seen.setdefault(m.value, m.position)
    for note in manifest.duplicates[:500]:
        copy = by_position[note["position"]]
        assert first_seen[copy] != note["position"]  # an earlier identical line exists
        assert orjson.loads(copy).get("event_id", orjson.loads(copy).get("change_id")) == \
            note["event_id"]


def test_arrival_order_with_skew_and_lateness(world):
    _, manifest, messages = world
    records = [r for r in map(_parsed, messages["transactions"])
               if r and isinstance(r.get("ingest_ts"), int) and isinstance(r.get("event_ts"), int)]
    # Lines are in arrival order, except retried copies (which keep their first ingest_ts).
    dup_ids = {n["event_id"] for n in manifest.duplicates}
    arrivals = [r["ingest_ts"] for r in records if r["event_id"] not in dup_ids]
    assert arrivals == sorted(arrivals)
    delays = {r["event_id"]: r["ingest_ts"] - r["event_ts"] for r in records}
    late = [n for n in manifest.late if n["stream"] == "transactions" and n["event_id"] in delays]
    assert late and all(delays[n["event_id"]] >= HOUR_MS for n in late)
    out_of_order = sum(1 for a, b in zip(records, records[1:], strict=False)
                       if b["event_ts"] < a["event_ts"])
    assert out_of_order > len(records) * 0.02


def test_purchase_lifecycle_is_consistent(world):
    _, _, messages = world
    check = validator("transaction")
    purchases = defaultdict(list)
    for m in messages["transactions"]:
        verdict = check.validate_bytes(m.value)
        if verdict.ok:
            purchases[verdict.record["purchase_id"]].append(verdict.record)
    kinds = Counter()
    for events in purchases.values():
        by_type = {e["event_type"]: e for e in events}
        auth = by_type.get("AUTH")
        if auth is None:
            continue  # its AUTH was one of the malformed records
        kinds[auth["auth_decision"]] += 1
        if auth["auth_decision"] == "DECLINED":
            assert auth["decline_reason"] is not None and set(by_type) == {"AUTH"}
            continue
        assert auth["decline_reason"] is None
        for follow in events:
            assert follow["event_ts"] >= auth["event_ts"]
            assert (follow["user_id"], follow["currency"]) == (auth["user_id"], auth["currency"])
            if follow["event_type"] == "REVERSAL":
                assert follow["reversal_reason"] in ("MERCHANT_VOID", "CHARGEBACK",
                                                     "AUTH_EXPIRED")
        kinds.update(e["reversal_reason"] for e in events if e["event_type"] == "REVERSAL")
        kinds.update(e["event_type"] for e in events if e["event_type"] == "SETTLEMENT")
    assert kinds["APPROVED"] > 10 * kinds["DECLINED"] > 0
    assert kinds["SETTLEMENT"] > 0.8 * kinds["APPROVED"]
    assert kinds["MERCHANT_VOID"] > 0
    currencies = {r.get("currency") for r in map(_parsed, messages["transactions"][:5000]) if r}
    assert {"USD", "EUR", "GBP", "CAD"} <= currencies


def test_knowledge_documents_have_updates_and_deletes_in_several_languages(world):
    _, manifest, messages = world
    docs = [orjson.loads(m.value) for m in messages["knowledge_documents"]]
    check = validator("knowledge_document_change")
    assert all(check.validate(d).ok for d in docs)
    assert {d["language"] for d in docs} >= {"en", "fr", "de", "es"}
    assert {d["op"] for d in docs} == {"UPSERT", "DELETE"}
    declines = next(d for d in docs if d["doc_id"] == "policy-declines-en")
    assert "## Insufficient Funds" in declines["body"]
    assert manifest.documents["UPSERT"] > len({d["doc_id"] for d in docs})  # updates too


@pytest.mark.parametrize("knobs, message", [
    ({"duplicate_rate": 1.5}, "duplicate_rate"),
    ({"events": 0}, "events"),
    ({"late_rate": 0.6, "out_of_order_rate": 0.6}, "late_rate"),
    ({"lateness_min_ms": 10, "lateness_max_ms": 5}, "lateness"),
])
def test_bad_knobs_are_refused_with_the_name(knobs, message):
    with pytest.raises(KnobError, match=message):
        Knobs(**knobs)


def test_durations_and_ranges_parse():
    assert parse_duration("10m") == 600_000 and parse_duration("250ms") == 250
    assert parse_range("1h..3d") == (3_600_000, 259_200_000)
    with pytest.raises(KnobError, match="not a duration"):
        parse_duration("ten minutes")


def test_profiles_reach_postgres_and_a_rerun_changes_nothing(tmp_settings, tmp_path):
    from mercury.generator.run import generate
    from mercury.stack.postgres_server import PostgresServer

    health = PostgresServer(tmp_settings).health()
    if not health.ok:
        pytest.fail(f"postgres is needed: {health.detail}")
    knobs = Knobs(events=20_000, users=300, seed=21, profile_update_rate=0.01)
    result = generate(tmp_settings, knobs, show_progress=False)
    with psycopg.connect(tmp_settings.postgres.conninfo()) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        before = conn.execute("SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables "
                              "WHERE relname = 'user_profiles'").fetchone()[0]
        world = TrafficGenerator(knobs, FileEventProducer(tmp_path)).world
        users = [u.user_id for u in world.users]
        rows = dict(conn.execute("SELECT user_id, kyc_status FROM mercury.user_profiles "
                                 "WHERE user_id = ANY(%s)", (users,)).fetchall())
    assert len(rows) == 300 and result.manifest.profile_updates > 50
    generate(tmp_settings, knobs, show_progress=False)  # same seed again
    with psycopg.connect(tmp_settings.postgres.conninfo()) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        after = conn.execute("SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables "
                             "WHERE relname = 'user_profiles'").fetchone()[0]
    assert after == before  # idempotent: no row rewritten, so CDC sees no phantom change


def test_cardholders_pay_mostly_in_their_home_currency(world):
    """Each user's AUTHs: about HOME_SHARE (88%) in the home country's currency, the rest
    abroad; an active user does not spend in every currency of the world."""
    from mercury.generator.world import COUNTRIES, HOME_SHARE, build_world

    _, _, messages = world
    rebuilt = build_world(random.Random(11), 800, 800)  # the fixture's seed and sizes
    home = {u.user_id: COUNTRIES[u.country][0] for u in rebuilt.users}
    by_user: dict[str, Counter] = defaultdict(Counter)
    for record in filter(None, map(_parsed, messages["transactions"])):
        if record.get("event_type") == "AUTH" and record.get("user_id") in home:
            by_user[record["user_id"]][record["currency"]] += 1
    auths = sum(sum(c.values()) for c in by_user.values())
    at_home = sum(c[home[user]] for user, c in by_user.items())
    assert auths > 3_000
    # Abroad, a merchant may still use the home currency (a euro country to another).
    assert HOME_SHARE - 0.03 < at_home / auths < HOME_SHARE + 0.06
    busiest = max(by_user.values(), key=lambda c: sum(c.values()))
    assert busiest.most_common(1)[0][1] > 0.8 * sum(busiest.values())

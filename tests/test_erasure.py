"""GDPR erasure end to end, on the real local stack, after a demo run.

One module fixture runs the demo itself (`mercury.demo.run_demo`, a smaller world, no
Airflow) in a private folder, Redis and port: the Flink SQL job, the context API and its
audit trail, the lake, the dbt marts, the feature history in Spark. Then three users are
erased (one in the audit trail, one with dead letters, one whose late events keep arriving
after the erasure) and every store is scanned for their ids, tokens and e-mail addresses:
nothing may be left, their audit ciphertexts no longer decrypt, and a control user is
untouched. Postgres is the shared local server; the CDC slot this test creates is dropped.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from mercury.config import Settings, load_settings
from tests.conftest import free_port, write_config
from tests.serving_fixtures import PrivateRedis
from tests.store_scan import Hit, file_texts, scan_files, scan_redis

EVENTS, USERS = 20_000, 400
# Flink's keyed state is binary and leaves with the state TTL (docs/COMPLIANCE.md); the
# other skipped paths hold no user data (the Flink distribution's own config and uploads).
NOT_SCANNED = ("/flink/checkpoints", "/flink/savepoints", "/flink/web-upload", "/flink/conf")


@dataclass
class DemoWorld:
    settings: Settings
    tmp: Path
    redis: PrivateRedis

    @property
    def roots(self) -> list[Path]:
        """The run's folder (data, event log, lake, warehouse, index: write_config puts them
        all there) and the local Flink cluster's logs (the job ran there: a record quoted in
        an exception would land in them)."""
        return [self.tmp, load_settings("local").log_dir / "flink"]


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory, flink_cluster):
    from mercury.cdc.profiles import reset
    from mercury.demo import run_demo
    from mercury.generator.knobs import Knobs

    tmp = tmp_path_factory.mktemp("erasure")
    redis = PrivateRedis(tmp)
    redis.start()
    path = write_config(tmp, online_store={"port": redis.port, "db": 0},
                        serving={"port": free_port()})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(path))
        settings = load_settings()
        try:
            assert run_demo(settings, Knobs(events=EVENTS, users=USERS, seed=11),
                            with_airflow=False) == []
            yield DemoWorld(settings, tmp, redis)
        finally:
            reset(settings)
            redis.stop()


# Where a person's name and e-mail may be stored: the profile stream (data class personal:
# the event log, its staged and archived copies, its lake table and dead letters). Card
# numbers and CVVs: only in the raw input topics, where producers put them and which are the
# ingest boundary (the contract drops such fields before any sink: mercury.contracts.sensitive).
PERSONAL_ALLOWED = ("/eventlog/user_profile_cdc/", "/lake_staging/",
                    "/raw/user_profile_changes/", "/quality/user_profile_cdc_dead_letters/")
CARD_ALLOWED = ("/eventlog/transactions/", "/eventlog/user_activity/", "/eventlog/risk_signals/")
# Digits inside a decimal number (a feature value's 0.245000000000005) are no card number.
_PAN = re.compile(rb"(?<![\w.-])[2-6]\d{3}(?:([ -]?)\d{4}\1\d{4}\1\d{4}|\d{11})(?![\w-]|\.\d)")
_CVV = re.compile(rb"(?i)(?<![a-z])(?:cvv2?|cvc2?|security code)\W{0,3}\d{3,4}(?!\d)")
_EMAIL = re.compile(rb"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IBAN = re.compile(rb"(?<![A-Z0-9])[A-Z]{2}\d{2}[A-Z0-9]{11,30}(?![A-Z0-9])")


def test_a_demo_run_stores_no_card_or_personal_data_outside_its_class(demo_world):
    """Everything the demo run wrote (files decoded by format, Redis keys and values): no card
    number (Luhn-valid), CVV or IBAN (mod-97) anywhere past the ingest boundary, and no
    user's name or e-mail outside the profile stream's own places."""
    import psycopg

    settings = demo_world.settings
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        rows = conn.execute("select full_name, email from mercury.user_profiles").fetchall()
    assert len(rows) >= USERS  # every user's profile (names repeat: the generator has few)
    people = {value.encode() for row in rows for value in row}
    # One pattern finds every "<first name> <last name>" (a search per person would read
    # the run's files 800 times); a candidate counts if it is one of the users' names.
    firsts, lasts = zip(*(p.split(b" ", 1) for p in people if b"@" not in p), strict=True)
    names = re.compile(b"(?:%s) (?:%s)" % (b"|".join(map(re.escape, set(firsts))),
                                          b"|".join(map(re.escape, set(lasts)))))
    found = []
    for where, text in file_texts(demo_world.roots, skip=NOT_SCANNED):
        if not any(part in where for part in CARD_ALLOWED):
            found += [f"card number in {where}" for m in _PAN.finditer(text)
                      if _luhn(re.sub(rb"\D", b"", m.group()))]
            found += [f"CVV in {where}" for _ in _CVV.finditer(text)]
            found += [f"IBAN in {where}" for m in _IBAN.finditer(text) if _iban_ok(m.group())]
        if not any(part in where for part in PERSONAL_ALLOWED):
            candidates = {m.group() for m in _EMAIL.finditer(text)}
            candidates |= {m.group() for m in names.finditer(text)}
            found += [f"name or e-mail {p.decode()!r} in {where}" for p in candidates & people]
    found += [f"{h.needle} in {h.where}" for h in scan_redis(_redis(demo_world),
                                                             [p.decode() for p in people])]
    assert found == [], "\n".join(found[:30])


def _luhn(digits: bytes) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits.decode())):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _iban_ok(text: bytes) -> bool:
    moved = (text[4:] + text[:4]).decode()
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


@dataclass
class Chosen:
    """The users of the erasure test and what the stores held about them before."""

    erased: list[str]  # in the audit trail, with dead letters, with late events to come
    control: str
    ciphertexts: list[tuple[str, str]]  # (request id, sealed question) of the audited user
    needles: list[str]  # ids, tokens and e-mails of the erased users
    control_footprint: dict

    @property
    def late(self) -> str:
        return self.erased[2]


def test_erased_users_are_gone_from_every_store(demo_world):
    from mercury.gdpr import erasure
    from mercury.privacy import erasure_register as register

    settings = demo_world.settings
    chosen = _choose_users(demo_world)
    run = uuid.uuid4().hex[:8]  # the register is the shared local Postgres: tickets unique
    tickets = [f"GDPR-{run}-{n}" for n in range(len(chosen.erased))]
    requests = [erasure.request_erasure(settings, ticket, user)
                for ticket, user in zip(tickets, chosen.erased, strict=True)]
    try:
        written = erasure.erase(settings, requests, progress=lambda _line: None)
        _assert_erased(demo_world, chosen, tickets, written)
    finally:
        with register.connect(settings) as conn:
            conn.execute(f"delete from {register.TABLE} where ticket = any(%s)",
                         (tickets,))


def _choose_users(world: DemoWorld) -> Chosen:
    from mercury.cdc.profiles import Pump
    from mercury.privacy.keys import load_keys
    from mercury.privacy.protect import user_token
    from mercury.serving.audit_sealing import open_question
    from mercury.serving.demo import busiest_decliners

    settings = world.settings
    keys = load_keys(settings)
    with Pump(settings) as pump:  # profiles captured: the erasure's delete travels by CDC
        pump.run_once()
    audited = busiest_decliners(settings, 1)[0]  # the user the demo asked questions for
    lettered = _user_with_dead_letters(settings, not_in={audited})
    late, control = _users_with_transactions(settings, not_in={audited, lettered})[:2]
    ciphertexts = _audit_questions(settings, user_token(keys, audited))
    assert ciphertexts, "the demo's questions should be in the audit trail"
    for request_id, value in ciphertexts:  # readable before the erasure
        assert open_question(settings, keys, value, request_id)
    erased = [audited, lettered, late]
    return Chosen(erased, control, ciphertexts, _needles(settings, keys, erased),
                  _footprint(world, control))


def _assert_erased(world: DemoWorld, chosen: Chosen, tickets: list[str],
                   written: list[dict]) -> None:
    from mercury.gdpr import evidence
    from mercury.lake.load import load_stream
    from mercury.privacy import erasure_register as register
    from mercury.privacy.errors import KeyErased
    from mercury.privacy.keys import load_keys
    from mercury.serving.audit_sealing import open_question

    settings = world.settings
    # Late data of an erased user, arriving afterwards, is dropped by the loaders.
    late_file = _write_late_transaction(settings, chosen.late)
    assert load_stream(settings, "transactions").erased == 1
    assert _compact_staged_line(settings, chosen.late).erased == 1

    hits = scan_files(world.roots, chosen.needles, skip=NOT_SCANNED)
    hits += scan_redis(_redis(world), chosen.needles)
    # The raw input topic holds what producers sent after the erasure until its retention
    # (Kafka in production): only the late event just written may name the user there.
    residual = [h for h in hits if h.where != str(late_file)]
    assert residual == [], _describe(residual)
    keys = load_keys(settings)
    for request_id, value in chosen.ciphertexts:
        with pytest.raises(KeyErased, match="erased"):
            open_question(settings, keys, value, request_id)
    assert _footprint(world, chosen.control) == chosen.control_footprint

    assert {row["ticket"] for row in written} == set(tickets)
    rows = evidence.read(settings, tickets[0])
    stores = {row["store"] for row in rows if row["removed"]}
    assert {"online_store", "lake", "warehouse", "event_log", "keys"} <= stores
    assert not any(n in orjson.dumps(rows, default=str).decode() for n in chosen.needles)
    assert not {r.ticket for r in register.pending(settings)} & set(tickets)


def _needles(settings: Settings, keys, users: list[str]) -> list[str]:
    import psycopg

    from mercury.privacy.protect import user_token

    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        emails = [row[0] for row in conn.execute(
            "select email from mercury.user_profiles where user_id = any(%s)", (users,))]
    assert len(emails) == len(users)
    return [*users, *(user_token(keys, u) for u in users), *emails]


def _user_with_dead_letters(settings: Settings, not_in: set[str]) -> str:
    from mercury.eventlog.file_log import FileEventReader

    for message in FileEventReader(settings.event_log.root).read("transactions.dlq"):
        letter = orjson.loads(message.value)
        raw = letter.get("raw_payload") or base64.b64decode(
            letter.get("raw_payload_base64") or b"").decode(errors="replace")
        try:
            user = orjson.loads(raw).get("user_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(user, str) and user.startswith("usr_") and user not in not_in:
            return user
    raise AssertionError("no dead letter names a user")


def _users_with_transactions(settings: Settings, not_in: set[str]) -> list[str]:
    from mercury.lake.tables import catalog

    users = catalog(settings).load_table("raw.transactions").scan(
        selected_fields=("user_id",)).to_arrow().column("user_id").to_pylist()
    return sorted(set(users) - not_in)


def _audit_questions(settings: Settings, token: str) -> list[tuple[str, str]]:
    from pyiceberg.expressions import EqualTo

    from mercury.lake.tables import catalog

    table = catalog(settings).load_table("audit.inference_requests")
    rows = table.scan(row_filter=EqualTo("user_token", token),
                      selected_fields=("request_id", "question")).to_arrow().to_pylist()
    return [(row["request_id"], row["question"]) for row in rows]


def _footprint(world: DemoWorld, user: str) -> dict:
    """What the stores hold about a user: Redis keys and lake rows per table."""
    from pyiceberg.expressions import EqualTo

    from mercury.lake.tables import catalog

    client = _redis(world)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"*{{u:{user}}}*"))
    lake = catalog(world.settings)
    rows = {}
    for name in ("raw.transactions", "raw.user_activity", "features.spending_v1"):
        column = "entity_id" if name.startswith("features") else "user_id"
        rows[name] = lake.load_table(name).scan(row_filter=EqualTo(column, user)).count()
    assert keys and rows["raw.transactions"], "the control user should have data"
    return {"keys": keys, "rows": rows}


def _write_late_transaction(settings: Settings, user: str) -> Path:
    """A settlement of the user's, produced after the erasure (a late event): a remaining
    settlement's shape, with a new event id and the erased user's id."""
    import uuid

    from pyiceberg.expressions import EqualTo

    from mercury.lake.tables import catalog

    table = catalog(settings).load_table("raw.transactions")
    row = table.scan(row_filter=EqualTo("event_type", "SETTLEMENT"),
                     limit=1).to_arrow().to_pylist()[0]
    event = {k: v for k, v in row.items() if v is not None}
    for name in ("event_ts", "ingest_ts"):
        event[name] = int(event[name].timestamp() * 1000)
    return _produce(settings, {**event, "event_id": str(uuid.uuid4()), "user_id": user})


def _produce(settings: Settings, event: dict) -> Path:
    from mercury.eventlog.file_log import FileEventProducer

    producer = FileEventProducer(settings.event_log.root, writer_id="late_after_erasure")
    producer.send("transactions", orjson.dumps(event), key=event["user_id"])
    producer.flush()
    return max((settings.event_log.root / "transactions").glob("part-late_after_erasure-*"))


def _compact_staged_line(settings: Settings, user: str):
    from mercury.lake import compact

    staged = compact.staging_dir(settings) / compact.VALIDATED
    staged.mkdir(parents=True, exist_ok=True)
    record = {"event_id": "00000000-0000-4000-8000-000000000001", "user_id": user}
    (staged / "part-late-after-erasure").write_bytes(orjson.dumps(
        {"stream": "transactions", "position": "transactions/late:1", "record": record}) + b"\n")
    return compact.compact(settings)


def _redis(world: DemoWorld):
    import redis

    return redis.Redis(port=world.redis.port)


def _describe(hits: list[Hit]) -> str:
    return "\n".join(f"{h.needle} in {h.where}" for h in hits[:30])

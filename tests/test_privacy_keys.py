"""The key hierarchy: ring rotation, AAD binding, crypto-shredding, race-safe user keys, the
AWS bindings (KMS and S3, mocked with moto: neither can run here) and the production profile
refusing local stand-ins. Postgres (127.0.0.1:5432) holds the user keys, as in production."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from mercury.config import CONFIG_DIR, ConfigError, load_settings
from mercury.privacy import envelope
from mercury.privacy.errors import KeyErased, KeyError_, RingConflict
from mercury.privacy.keys import forget_loaded_keys, load_keys, rotate
from mercury.privacy.protect import user_token, user_tokens
from mercury.privacy.userkeys import open_user_keys, shred_user_keys
from mercury.serving.audit import AuditShipper, AuditSpool
from mercury.serving.audit_sealing import AuditSealer, open_question
from mercury.serving.spool_keys import SpoolKeys
from tests.conftest import write_config


def _user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def _sealer(settings, keys, folder: Path, owner: str = "me", max_messages: int = 1 << 24):
    return AuditSealer(SpoolKeys(folder, owner, keys, max_messages),
                       open_user_keys(settings, keys), keys)


def _shipped(settings, keys, sealer, request_id: str, user_id: str, question: str) -> str:
    """What the lake keeps of a question: spooled, then sealed again by the shipper."""
    record = {"request_id": request_id, "question_redacted": None,
              "question": sealer.seal_for_spool(request_id, user_id, question)}
    sealer.prefetch([("inference_audit", record)])
    return sealer.finish("inference_audit", record)["question"]


def test_the_key_file_is_private_and_the_ring_holds_only_wrapped_keys(tmp_settings):
    keys = load_keys(tmp_settings)
    assert stat.S_IMODE(os.stat(tmp_settings.key_file).st_mode) == 0o600
    ring = (tmp_settings.data_dir / "keys" / "keyring.json").read_bytes()
    for purpose in ("tokenization", "service_tokens", "spool", "user_kek", "user_index"):
        assert base64.b64encode(keys.key(purpose)) not in ring
    assert set(orjson.loads(ring)["purposes"]) >= {"tokenization", "user_kek"}


def test_rotation_keeps_old_values_readable_and_moves_new_ones(tmp_settings, tmp_path):
    keys = load_keys(tmp_settings)
    alice, bob = _user(), _user()
    sealer = _sealer(tmp_settings, keys, tmp_path / "spool")
    old_question = _shipped(tmp_settings, keys, sealer, "r-old", alice, "old question")
    spooled_before = sealer.seal_for_spool("r-spooled", bob, "spooled before the rotation")
    token_before = user_token(keys, alice)

    assert rotate(tmp_settings, "user_kek") == 2
    assert rotate(tmp_settings, "spool") == 2
    keys = load_keys(tmp_settings)  # the next process's view
    assert keys.active["user_kek"] == 2 and keys.versions("user_kek") == [1, 2]
    # data keys rotated: tokens do not move
    assert user_token(keys, alice) == token_before
    # old rows still open; a new user's key is wrapped under the new version
    assert open_question(tmp_settings, keys, old_question, "r-old") == "old question"
    carol = _user()
    fresh = _sealer(tmp_settings, keys, tmp_path / "spool", owner="next")
    new_question = _shipped(tmp_settings, keys, fresh, "r-new", carol, "new question")
    assert open_question(tmp_settings, keys, new_question, "r-new") == "new question"
    import psycopg
    with psycopg.connect(tmp_settings.postgres.conninfo()) as conn:
        kek = conn.execute("select kek_version from privacy.user_keys where key_id = %s",
                           (envelope.parse(new_question).key_id,)).fetchone()
    assert kek == (2,)
    # the new process's spool key is wrapped under spool v2, the old process's still opens
    assert open_question(tmp_settings, keys, spooled_before, "r-spooled",
                         spool_folder=tmp_path / "spool") == "spooled before the rotation"
    fresh.seal_for_spool("r-x", carol, "x")
    versions = {orjson.loads(p.read_bytes())["ring_version"]
                for p in (tmp_path / "spool").glob("next.*.key")}
    assert versions == {2}
    with pytest.raises(KeyError_, match="not rotatable"):
        rotate(tmp_settings, "user_index")


def test_a_tokenization_rotation_changes_tokens_and_keeps_every_old_one(tmp_settings):
    keys = load_keys(tmp_settings)
    before = user_token(keys, "u-1")
    rotate(tmp_settings, "tokenization")
    keys = load_keys(tmp_settings)
    after = user_token(keys, "u-1")
    assert after != before and user_tokens(keys, "u-1") == {1: before, 2: after}


def test_a_ciphertext_moved_to_another_request_or_field_does_not_open(tmp_settings, tmp_path):
    keys = load_keys(tmp_settings)
    sealer = _sealer(tmp_settings, keys, tmp_path / "spool")
    user = _user()
    sealed = _shipped(tmp_settings, keys, sealer, "r-1", user, "is my card blocked?")
    assert sealed.startswith("enc2:user:") and "card" not in sealed
    assert open_question(tmp_settings, keys, sealed, "r-1") == "is my card blocked?"
    with pytest.raises(ValueError, match="belongs elsewhere"):
        open_question(tmp_settings, keys, sealed, "r-2")
    with pytest.raises(ValueError, match="belongs elsewhere"):
        open_question(tmp_settings, keys, sealed, "r-1", field="served_features_json")
    # a header edited to name another user's key does not open either
    other = _shipped(tmp_settings, keys, sealer, "r-1", _user(), "x")
    swapped = ":".join(sealed.split(":")[:2] + [envelope.parse(other).key_id,
                                                  sealed.split(":", 3)[3]])
    with pytest.raises(ValueError, match="belongs elsewhere"):
        open_question(tmp_settings, keys, swapped, "r-1")
    # the spooled form is bound the same way, and the shipper refuses a moved one
    spooled = sealer.seal_for_spool("r-3", user, "q")
    with pytest.raises(ValueError):
        sealer.finish("inference_audit", {"request_id": "r-4", "question": spooled,
                                          "question_redacted": None})


def test_after_shredding_a_users_values_never_open_and_others_still_do(tmp_settings, tmp_path):
    keys = load_keys(tmp_settings)
    sealer = _sealer(tmp_settings, keys, tmp_path / "spool")
    erased, control = _user(), _user()
    gone = _shipped(tmp_settings, keys, sealer, "r-e", erased, "erase me")
    kept = _shipped(tmp_settings, keys, sealer, "r-c", control, "keep me")

    assert shred_user_keys(tmp_settings, erased) == 1
    assert shred_user_keys(tmp_settings, erased) == 0  # idempotent
    with pytest.raises(KeyErased, match="this user's key was erased"):
        open_question(tmp_settings, keys, gone, "r-e")
    assert open_question(tmp_settings, keys, kept, "r-c") == "keep me"
    # a key made for the same user later is another key: the old value still does not open
    _shipped(tmp_settings, keys, sealer, "r-late", erased, "late")
    with pytest.raises(KeyErased):
        open_question(tmp_settings, keys, gone, "r-e")
    # the investigators' command says so
    env = {**os.environ, "MERCURY_CONFIG": os.environ["MERCURY_CONFIG"]}
    done = subprocess.run([sys.executable, "-m", "mercury.cli", "privacy", "decrypt", gone,
                           "--request-id", "r-e"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 1 and "this user's key was erased" in done.stderr
    done = subprocess.run([sys.executable, "-m", "mercury.cli", "privacy", "decrypt", kept,
                           "--request-id", "r-c"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "keep me"


def test_two_pods_making_the_same_users_first_keys_agree(tmp_settings):
    keys = load_keys(tmp_settings)
    users = [_user() for _ in range(20)]
    barrier = threading.Barrier(4)
    results: list[dict] = []

    def pod() -> None:
        store = open_user_keys(tmp_settings, keys)
        store.keys_for([])  # connected, schema made: the race is on the users' rows
        barrier.wait()
        results.append(store.keys_for(users))
        store.close()

    threads = [threading.Thread(target=pod) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4
    for user in users:
        assert len({(r[user].key_id, r[user].key) for r in results}) == 1
    import psycopg

    from mercury.privacy.userkeys import user_ref
    with psycopg.connect(tmp_settings.postgres.conninfo()) as conn:
        rows = conn.execute("select count(*) from privacy.user_keys where user_ref = any(%s)",
                            ([user_ref(keys, u) for u in users],)).fetchone()
    assert rows == (20,)


def test_the_spool_key_is_replaced_after_its_message_bound(tmp_settings, tmp_path):
    keys = load_keys(tmp_settings)
    spool_keys = SpoolKeys(tmp_path, "me", keys, max_messages=3)
    ids = [spool_keys.current()[0] for _ in range(7)]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4] == ids[5] != ids[6]
    # each key was on disk (wrapped) before use: another process opens them all
    other = SpoolKeys(tmp_path, "other", keys, max_messages=3)
    for key_id in set(ids):
        assert other.key(key_id) == spool_keys.key(key_id)
        assert spool_keys.key(key_id).hex() not in (tmp_path / f"me.{key_id}.key").read_text()


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str]] = []

    def send(self, stream: str, payload: bytes, key: str) -> None:
        self.sent.append((stream, payload, key))

    def flush(self) -> None:
        pass


def test_the_shipper_seals_per_user_with_one_key_lookup_per_batch(tmp_settings, tmp_path):
    keys = load_keys(tmp_settings)
    spool = AuditSpool(tmp_path / "spool", owner="me")
    sealer = _sealer(tmp_settings, keys, spool.folder, owner=spool.owner)
    lookups: list[int] = []
    original = sealer.user_keys.keys_for
    sealer.user_keys.keys_for = lambda users: (lookups.append(1), original(users))[1]
    users = [_user() for _ in range(3)]
    for i in range(9):
        rid = f"r-{i}"
        spool.append("inference_audit", rid, {
            "request_id": rid, "question_redacted": None,
            "question": sealer.seal_for_spool(rid, users[i % 3], f"mail me at u{i}@x.com")})
    assert "@x.com" not in spool.path.read_text() and users[0] not in spool.path.read_text()
    producer = _Producer()
    AuditShipper(spool, producer, lambda stream, record: orjson.dumps(record),
                 prepare=sealer.finish, prefetch=sealer.prefetch).ship_once()
    assert len(producer.sent) == 9 and lookups == [1]
    for _, payload, rid in producer.sent:
        record = orjson.loads(payload)
        assert record["question"].startswith("enc2:user:")
        assert record["question_redacted"] == "mail me at [email]"
        assert open_question(tmp_settings, keys, record["question"], rid).startswith("mail me")
    spool.close()


def test_values_of_the_one_key_layout_still_open_and_tokens_do_not_change(tmp_path,
                                                                         monkeypatch):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    monkeypatch.setenv("MERCURY_CONFIG", str(write_config(tmp_path)))
    settings = load_settings()
    raw = {n: os.urandom(32) for n in ("tokenization", "encryption", "service_tokens")}
    settings.key_file.parent.mkdir(parents=True)
    settings.key_file.write_bytes(orjson.dumps(
        {"key_id": "abcd1234", **{n: base64.b64encode(v).decode() for n, v in raw.items()}}))
    nonce = os.urandom(12)
    enc1 = "enc1:abcd1234:" + base64.b64encode(
        nonce + AESGCM(raw["encryption"]).encrypt(nonce, b"before the ring", b"abcd1234")
    ).decode()
    keys = load_keys(settings)
    old_token = "ut_" + hmac.new(raw["tokenization"], b"u-9", hashlib.sha256).hexdigest()[:32]
    assert user_token(keys, "u-9") == old_token
    assert open_question(settings, keys, enc1, None) == "before the ring"


# ---- AWS: KMS and the S3 key ring, mocked (no AWS account here) ----------------------------

@pytest.fixture
def aws(monkeypatch):
    moto = pytest.importorskip("moto")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        import boto3

        key_id = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
        boto3.client("s3").create_bucket(
            Bucket="mercurypay-privacy-keys",
            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        monkeypatch.setenv("MERCURY_KMS_KEY_ARN", key_id)
        yield key_id


def test_kms_and_the_s3_ring_end_to_end(aws, tmp_path, monkeypatch):
    """KMS is mocked with moto because it cannot run here: the calls, encryption contexts and
    S3 conditional writes are boto3's real ones against moto's models."""
    import boto3

    from mercury.privacy.kms import AwsKms
    from mercury.privacy.ringstore import S3RingStore

    uri = "s3://mercurypay-privacy-keys/keyring/privacy.json"
    monkeypatch.setenv("MERCURY_CONFIG", str(write_config(tmp_path, privacy={
        "key_source": "kms", "kms_key_id_env": "MERCURY_KMS_KEY_ARN", "keyring_uri": uri})))
    settings = load_settings()
    keys = load_keys(settings)
    assert not settings.key_file.exists()  # no local stand-in anywhere
    ring = boto3.client("s3").get_object(Bucket="mercurypay-privacy-keys",
                                         Key="keyring/privacy.json")["Body"].read()
    assert base64.b64encode(keys.key("tokenization")) not in ring

    forget_loaded_keys()  # another pod: the same ring, the same tokens
    assert user_token(load_keys(settings), "u-1") == user_token(keys, "u-1")

    # a wrapped key is bound to its encryption context
    kms = AwsKms(aws)
    plain, wrapped = kms.generate_data_key({"purpose": "a"})
    assert kms.unwrap(wrapped, {"purpose": "a"}) == plain
    with pytest.raises(KeyError_, match="KMS refused"):
        kms.unwrap(wrapped, {"purpose": "b"})

    # rotation through S3, and a stale write loses
    store = S3RingStore(uri)
    _, stale = store.read()
    assert rotate(settings, "tokenization") == 2
    with pytest.raises(RingConflict):
        store.write(b"{}", stale)
    rotated = load_keys(settings)
    assert rotated.versions("tokenization") == [1, 2]
    assert user_tokens(rotated, "u-1")[1] == user_token(keys, "u-1")

    # user keys under the KMS-wrapped ring, shredded
    sealer = _sealer(settings, rotated, tmp_path / "spool")
    user = _user()
    sealed = _shipped(settings, rotated, sealer, "r-1", user, "hello")
    assert open_question(settings, rotated, sealed, "r-1") == "hello"
    assert shred_user_keys(settings, user) == 1
    with pytest.raises(KeyErased):
        open_question(settings, rotated, sealed, "r-1")


# ---- the production profile -------------------------------------------------------------------

def _production(tmp_path: Path, monkeypatch, change) -> None:
    raw = yaml.safe_load((CONFIG_DIR / "production.yaml").read_text())
    change(raw)
    path = tmp_path / "production.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MERCURY_CONFIG", str(path))


@pytest.mark.parametrize("change, setting", [
    (lambda raw: raw["privacy"].update(key_source="local_file"), "privacy.key_source"),
    (lambda raw: raw.pop("privacy"), "privacy.key_source"),
    (lambda raw: raw["privacy"].pop("kms_key_id_env"), "privacy.kms_key_id"),
    (lambda raw: raw["privacy"].update(keyring_uri="/var/lib/mercury/keys/ring.json"),
     "privacy.keyring_uri"),
    (lambda raw: raw["serving"]["identity"].pop("jwks_path"), "serving.identity.jwks_path"),
    (lambda raw: raw.pop("monitoring"), "monitoring.alertmanager_url"),
])
def test_production_refuses_local_stand_ins_naming_the_setting(tmp_path, monkeypatch, change,
                                                               setting):
    _production(tmp_path, monkeypatch, lambda raw: None)
    settings = load_settings()  # the committed production profile passes
    assert settings.privacy.key_source == "kms"
    _production(tmp_path, monkeypatch, change)
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        load_settings()


def test_no_production_process_can_make_an_identity_provider_key(tmp_path, monkeypatch):
    from mercury.serving.local_idp import ensure_keys
    from mercury.serving.runtime import jwks_path

    _production(tmp_path, monkeypatch, lambda raw: raw.update(data_dir=str(tmp_path / "d")))
    settings = load_settings()
    assert jwks_path(settings) == Path("/etc/mercury/idp/jwks.json")  # the provider's, mounted
    with pytest.raises(RuntimeError, match="does not run in production"):
        ensure_keys(settings)
    assert not (tmp_path / "d" / "idp").exists()


def test_callers_tokens_verify_under_every_retained_version(tmp_settings):
    from mercury.serving.auth import AccessDenied, authenticate_caller, service_token

    callers = frozenset({"llm-gateway"})
    old = service_token(load_keys(tmp_settings), "llm-gateway")
    rotate(tmp_settings, "service_tokens")
    keys = load_keys(tmp_settings)
    new = service_token(keys, "llm-gateway")
    assert new != old
    for token in (old, new):
        assert authenticate_caller(keys, callers, f"Bearer {token}") == "llm-gateway"
    with pytest.raises(AccessDenied):
        authenticate_caller(keys, callers, f"Bearer {new[:-1]}{'1' if new[-1] == '0' else '0'}")


def test_a_kms_key_named_by_an_unset_variable_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv("MERCURY_KMS_KEY_ARN", raising=False)
    monkeypatch.setenv("MERCURY_CONFIG", str(write_config(tmp_path, privacy={
        "key_source": "kms", "kms_key_id_env": "MERCURY_KMS_KEY_ARN"})))
    with pytest.raises(ConfigError, match="'MERCURY_KMS_KEY_ARN', which is not set"):
        load_keys(load_settings())

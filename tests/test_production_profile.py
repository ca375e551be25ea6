"""The production profile on stand-ins: ``config/production.yaml`` as committed, with only the
addresses of its services changed, each binding exercised once through the factory the
platform itself uses. ARCHITECTURE.md says "the code path is the same; only bindings differ";
this is where that is tested.

What stands in for what, and why:
- online store: a real redis-server in cluster mode, with TLS (a test CA) and a password, as
  ElastiCache runs it. Real, not mocked.
- event log: librdkafka's mock cluster and confluent-kafka's ``mock://`` Schema Registry (no
  broker or registry can run here). The mock cluster's listeners are plaintext, so
  ``security_protocol`` is the one setting changed that is not an address.
- keys: AWS KMS and the S3 key ring through moto (no AWS here).
- warehouse: a fakesnow server speaking Snowflake's protocol (Snowflake cannot run here).
- knowledge index: OpenSearch at request level (it cannot run here): the real client with
  only the socket replaced (``tests.test_opensearch_index.FakeCluster``).

- Postgres (profiles, the users' data keys, operational state): a private postgres server
  with TLS only (its certificate from the test CA), so ``sslmode: verify-full`` is held as in
  production. Real, not mocked; it needs root to run the server as the postgres user.

- lake: the Glue catalog and S3 through moto in server mode (pyarrow's S3 client is not
  Python, so only a server on a port reaches it): ``lake.catalog_uri`` and ``lake.s3_endpoint``
  are the addresses changed.

Not exercised here, and where instead: the Flink cluster on RocksDB (tests/flink) and Spark on
EMR Serverless (tests/test_emr_submit.py, tests/test_feature_backfill_emr_dag.py).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mercury.config import CONFIG_DIR, KafkaEventLogConfig, RedisStoreConfig, load_settings

SECRETS = {"MERCURY_REDIS_AUTH": "elasticache-auth-token", "MERCURY_KAFKA_USER": "svc",
           "MERCURY_KAFKA_PASSWORD": "kafka-secret", "MERCURY_OPENSEARCH_USER": "mercury",
           "MERCURY_OPENSEARCH_PASSWORD": "opensearch-secret",
           "MERCURY_PG_PASSWORD": "pg-secret", "MERCURY_KEYS_PG_PASSWORD": "keys-secret"}


@pytest.fixture
def production(tmp_path, monkeypatch):
    """``production(section={field: value})``: the committed production profile with those
    fields replaced (addresses only), loaded as every process loads its settings."""
    for name, value in SECRETS.items():  # Secrets Manager's job in production
        monkeypatch.setenv(name, value)

    def load(**changes: dict):
        raw = yaml.safe_load((CONFIG_DIR / "production.yaml").read_text())
        raw["data_dir"] = str(tmp_path / "data")  # /var/lib/mercury is the pods' volume
        _merge(raw, changes)
        path = tmp_path / "production.yaml"
        path.write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("MERCURY_CONFIG", str(path))
        settings = load_settings()
        assert settings.profile == "production"
        return settings

    return load


def _merge(into: dict, changes: dict) -> None:
    for name, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(name), dict):
            _merge(into[name], value)
        else:
            into[name] = value


# ---- online store: Redis cluster mode over TLS ------------------------------------------------

@dataclass
class TlsRedisCluster:
    """One redis-server in cluster mode holding every slot, TLS only (no plaintext port),
    its certificate issued by a CA made for this test and naming 127.0.0.1."""
    folder: Path
    password: str
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def start(self) -> None:
        import redis

        _issue_certificates(self.folder, "server")
        self.port = _port_with_a_free_neighbour()
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(self.port),
             "--tls-cert-file", str(self.folder / "server.pem"),
             "--tls-key-file", str(self.folder / "server.key"),
             "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
             "--tls-cluster", "yes", "--cluster-enabled", "yes",
             "--cluster-config-file", str(self.folder / "nodes.conf"),
             "--requirepass", self.password, "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        node = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, ssl=True,
                           ssl_ca_certs=str(self.ca), socket_timeout=2)
        deadline = time.monotonic() + 20
        while True:
            try:
                node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start: "
                                       + (self.folder / "redis.log").read_text()) from None
                time.sleep(0.05)
        while b"cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise RuntimeError("the one-node cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        node.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def _port_with_a_free_neighbour() -> int:
    """A free port at most 55535 whose port + 10000 is free too (a Redis cluster node listens
    on both; the Postgres stand-in takes one the same way)."""
    import random
    import socket

    for port in random.sample(range(20_000, 55_536), 200):
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a Redis cluster node")


def _issue_certificates(folder: Path, name_prefix: str) -> None:
    """``ca.pem`` and ``<name_prefix>.pem``/``.key``: a server certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mercury test ca"))
          .issuer_name(name("mercury test ca")).public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(2)
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName(
                  [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name_prefix}.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name_prefix}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@pytest.fixture
def tls_redis(tmp_path):
    cluster = TlsRedisCluster(tmp_path / "redis", SECRETS["MERCURY_REDIS_AUTH"])
    cluster.folder.mkdir()
    cluster.start()
    yield cluster
    cluster.stop()


def test_online_store_runs_on_a_redis_cluster_over_tls(production, tls_redis):
    import redis

    from mercury.online import layout
    from mercury.online.factory import open_store
    from mercury.online.store import KeyWrite

    # The context API's 50 ms connect budget is for a store in the same zone; the TLS
    # handshake on this busy 2-core machine is given 2 s.
    settings = production(online_store={"host": "127.0.0.1", "port": tls_redis.port,
                                        "ssl_ca_certs": str(tls_redis.ca),
                                        "connect_timeout_s": 2.0})
    binding = settings.online_store
    assert isinstance(binding, RedisStoreConfig)
    assert (binding.cluster, binding.ssl, binding.ssl_cert_reqs) == (True, True, "required")

    store = open_store(settings)
    # Every call the platform makes, once: a cluster refuses some commands in a pipeline (and
    # multi-key commands across slots) that a single node takes.
    key, other = "fs:{u:usr_1}:spending.v3", "fs:{u:usr_2}:spending.v3"
    old_tile, new_tile = layout.tile_field(3_600_000, 5), layout.tile_field(3_600_000, 9)
    store.write([KeyWrite(key, {"stale": b"x"}),
                 KeyWrite(other, {"amount_30d": b"1"}, ttl_ms=60_000)])
    store.write([KeyWrite(key, {"amount_30d": b"12.5", old_tile: b"1", new_tile: b"2"},
                          ttl_ms=60_000, replace=True),
                 KeyWrite(key, {}, delete_fields=("amount_30d",),
                          prune_tiles=((3_600_000, 9),))])
    assert store.promote("spending", 2) is None and store.promote("spending", 3) == 2
    expected = ([{new_tile: b"2"}, {"amount_30d": b"1"}], {"spending": 3, "risk": None})
    assert store.fetch([key, other], ["spending", "risk"]) == expected
    assert asyncio.run(store.afetch([key, other], ["spending", "risk"])) == expected
    assert store.active_versions(["spending", "risk"]) == {"spending": 3, "risk": None}
    assert store.pointer_history("spending") == [2]
    assert store.rollback("spending") == (3, 2) and store.active_versions(["spending"]) == \
        {"spending": 2}
    store.put_values({"snap:{u:usr_1}": b"a", "snap:{u:usr_2}": b"b"}, ttl_ms=60_000)
    assert store.get_values(["snap:{u:usr_2}", "snap:{u:usr_1}", "snap:{u:none}"]) == \
        [b"b", b"a", None]
    assert sorted(store.scan("fs:{u:*")) == sorted([key, other])
    assert store.expire([key, "fs:{u:none}:spending.v3"], 30_000) == 1
    store.publish_erasures(["h1", "h2"], at_ms=2_000, keep_ms=60_000)
    assert sorted(store.erasures_since(1_000)) == [("h1", 2_000), ("h2", 2_000)]
    assert store.delete([key, other, "snap:{u:usr_1}"]) == 3
    # The fallback priors: published and read back on the cluster (one hash tag, one slot).
    from datetime import date

    from mercury.features.definition.compile import load_one
    from mercury.features.offline import priors
    from mercury.serving.priors import PriorBook

    prior = priors.compute(load_one("spending.v1"), date(2026, 11, 20), [("usr_1", {})], {}, 1)
    assert priors.publish(store, [prior], ttl_s=3_600) == {
        layout.prior_key("spending", 1): "written"}
    book = PriorBook(store, [("spending", 1), ("risk", 1)])
    assert book.refresh() == 1 and book.lookup("spending", 1, "FR/LOW").users == 1
    assert store.delete([layout.prior_key("spending", 1)]) == 1
    store.close()

    # The certificate is checked: a client trusting only the system's CAs is refused.
    untrusting = open_store(binding.model_copy(update={"ssl_ca_certs": None}))
    with pytest.raises(redis.exceptions.RedisClusterException):
        untrusting.fetch([key])


# ---- Postgres: TLS with the certificate verified (verify-full) ------------------------------

BOOTSTRAP = Path(__file__).parents[1] / "infra/terraform/modules/postgres/bootstrap.sql"


@dataclass
class TlsPostgres:
    """A private postgres server accepting only TLS connections on 127.0.0.1 (pg_hba rejects
    plaintext), with the databases that production.yaml names and the service roles made by
    Terraform's bootstrap SQL, with only its grants (none is a superuser)."""
    folder: Path
    port: int = 0

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def _as_postgres(self, *argv: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        import shutil


        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if os.geteuid() != 0 or not binaries or shutil.which("runuser") is None:
            pytest.skip("a private postgres server needs root (to run it as postgres) and "
                        "the server binaries under /usr/lib/postgresql")
        bin_dir, data = binaries[-1], self.folder / "data"
        _issue_certificates(self.folder, "server")
        shutil.chown(self.folder, "postgres")
        for name in ("server.pem", "server.key"):
            shutil.chown(self.folder / name, "postgres")
        (self.folder / "server.key").chmod(0o600)
        self._as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                          "--auth=trust")
        (data / "pg_hba.conf").write_text("local all all trust\n"
                                          "hostssl all all 127.0.0.1/32 trust\n"
                                          "hostssl replication all 127.0.0.1/32 trust\n"
                                          "hostnossl all all 127.0.0.1/32 reject\n")
        self.port = _port_with_a_free_neighbour()
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.folder} -c ssl=on -c wal_level=logical "
                   f"-c ssl_cert_file={self.folder / 'server.pem'} "
                   f"-c ssl_key_file={self.folder / 'server.key'}")
        self._as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                          "-l", str(self.folder / "postgres.log"), "-w", "start")
        self.bootstrap()

    def superuser(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host=str(self.folder), port=self.port, user="postgres",
                               dbname=database, autocommit=True)

    def bootstrap(self) -> None:
        """What the README's first-apply step does, in its order: the ops database, the profile
        table (the profile service's; here the generator's DDL), the bootstrap file in one
        transaction, then the ops database handed to its role. Run twice: it must be safe to
        run again."""
        from mercury.generator.profiles_pg import DDL

        with self.superuser() as conn:
            conn.execute("create database profiles")
            conn.execute("create database mercury_ops")
        with self.superuser("profiles") as conn:
            conn.execute(DDL)
            for _ in range(2):
                with conn.transaction():
                    conn.execute(BOOTSTRAP.read_text())
        with self.superuser("mercury_ops") as conn:
            conn.execute("alter database mercury_ops owner to mercury_ops")

    def stop(self) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        self._as_postgres(str(binaries[-1] / "pg_ctl"), "-D", str(self.folder / "data"),
                          "-m", "immediate", "stop")

    def address(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "sslrootcert": str(self.ca)}


@pytest.fixture(scope="module")
def tls_postgres():
    import shutil
    import tempfile

    # Not under pytest's base folder: its 0700 parents keep the postgres user out
    folder = Path(tempfile.mkdtemp(prefix="mercury-tls-postgres-"))
    server = TlsPostgres(folder)
    try:
        server.start()
        yield server
    finally:
        if server.port:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _encrypted(conn) -> bool:
    return conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()"
                        ).fetchone() == (True,)


def test_postgres_bindings_hold_verify_full(production, tls_postgres):
    import psycopg

    from mercury.ops import state
    from mercury.privacy import erasure_register

    address = tls_postgres.address()
    settings = production(postgres=address, ops_state={"postgres": address})
    assert settings.postgres.sslmode == "verify-full"
    with erasure_register.connect(settings) as conn:  # the profiles database
        assert _encrypted(conn)
    with state.connect(settings) as conn:  # operational state, its own database and role
        assert _encrypted(conn)
        assert conn.execute("select current_database(), current_user").fetchone() == \
            ("mercury_ops", "mercury_ops")
    # verify-full checks the server's certificate: without the CA that issued it, refused
    untrusted = settings.postgres.model_copy(update={"sslrootcert": None})
    with pytest.raises(psycopg.OperationalError, match="certificate|root"):
        psycopg.connect(untrusted.conninfo()).close()


class _Sent:
    """Stands in for the event log here: the pump's records are counted by key, not sent."""

    def __init__(self):
        self.keys: list[tuple[str, str]] = []

    def send(self, stream, value, key=None):
        self.keys.append((stream, key))

    def flush(self):
        pass

    def close(self):
        pass


def _profile(user_id: str, name: str) -> tuple:
    return (user_id, name, f"{user_id}@example.com", "en-GB", "GB", "LOW", "VERIFIED", "{}",
            datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC))


def test_each_postgres_role_does_its_job_and_is_refused_the_rest(production, tls_postgres,
                                                                   tmp_path):
    """As the bootstrap's roles, over verify-full: the CDC pump snapshots and streams the
    profiles, the erasure deletes a profile at the source (its delete streams too), the key
    role keeps its keys; and each role is refused what belongs to another."""
    import psycopg

    from mercury.cdc.profiles import PROFILES, Pump
    from mercury.gdpr.profiles import erase_profiles
    from mercury.gdpr.subject import Subject
    from mercury.generator.profiles_pg import COLUMNS, TABLE
    from mercury.privacy import erasure_register
    from mercury.privacy.userkeys import SCHEMA

    address = tls_postgres.address()
    settings = production(postgres=address, ops_state={"postgres": address},
                          event_log={"schema_registry_url": f"mock://{tmp_path.name}"})
    insert = f"insert into {TABLE} ({', '.join(COLUMNS)}) values ({', '.join(['%s'] * 9)})"
    with tls_postgres.superuser("profiles") as owner:  # the profile service writes them
        for user in ("usr_1", "usr_2"):
            owner.execute(insert, _profile(user, "Ada Lovelace"))
    sent = _Sent()
    with Pump(settings, producer=sent) as pump:
        assert pump.run_once().ops == {"r": 2}  # the snapshot, through the publication
        with tls_postgres.superuser("profiles") as owner:
            owner.execute(f"update {TABLE} set locale = 'fr-FR' where user_id = 'usr_1'")
        subject = Subject("T-1", "usr_2", (), "hash-2")
        assert [r.removed for r in erase_profiles(settings, [subject])] == [1]
        assert pump.run_once().ops == {"u": 1, "d": 1}
    assert sent.keys == [(PROFILES.stream, u) for u in ("usr_1", "usr_2", "usr_1", "usr_2")]

    def refused(role: str, database: str, statement: str) -> None:
        conninfo = settings.postgres.model_copy(update={"user": role}).conninfo(database)
        # a refused connection is an OperationalError, a refused statement its own class
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.OperationalError),
                           match="permission denied"):
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(statement)

    erasure_register.connect(settings).close()  # the CDC role makes (and owns) its register
    keys_role = settings.postgres.model_copy(update={"user": "mercury_keys"})
    with psycopg.connect(keys_role.conninfo(), autocommit=True) as conn:
        conn.execute(SCHEMA)  # and the key role its table, as the key store does on first use
    refused("mercury_keys", "profiles", f"select * from {TABLE}")
    refused("mercury_keys", "profiles", "select * from privacy.erasure_requests")
    refused("mercury_cdc", "profiles", f"update {TABLE} set locale = 'x'")
    refused("mercury_cdc", "profiles", "select * from privacy.user_keys")
    refused("mercury_cdc", "profiles", "create schema intruder")
    refused("mercury_ops", "profiles", "select 1")  # no CONNECT on the profiles database
    refused("mercury_cdc", "mercury_ops", "select 1")


# ---- event log: Kafka, Confluent Avro through the Schema Registry --------------------------

def test_event_log_runs_on_kafka_with_avro_through_the_registry(production, tmp_path):
    from confluent_kafka import Producer

    from mercury.contracts import payloads
    from mercury.eventlog import encode_record, open_consumer, open_producer, writer_schemas
    from tests.lake_fixtures import transaction

    cluster = Producer({"test.mock.num.brokers": 3})  # held open: the cluster lives with it
    brokers = cluster.list_topics(timeout=10).brokers.values()
    settings = production(event_log={
        "bootstrap_servers": ",".join(f"{b.host}:{b.port}" for b in brokers),
        "schema_registry_url": f"mock://{tmp_path.name}", "security_protocol": "PLAINTEXT",
        "session_timeout_ms": 6000})
    assert isinstance(settings.event_log, KafkaEventLogConfig)
    assert settings.event_log.serialization == "avro"

    record = transaction(1)
    with open_producer(settings) as producer:
        producer.send("transactions", encode_record(settings, "transactions", record),
                      key=record["user_id"])
    with open_consumer(settings, "production-smoke", ["transactions"]) as consumer:
        [message] = [m for batch in consumer.read_to_end() for m in batch]
    assert message.value[:1] == b"\x00"  # Confluent's wire format: magic byte, schema id
    decoded = payloads.decode(message.value, writer_schemas(settings))
    assert {k: decoded[k] for k in ("event_id", "user_id", "amount", "event_ts")} == \
        {k: record[k] for k in ("event_id", "user_id", "amount", "event_ts")}
    cluster.flush(5)


# ---- keys: AWS KMS and the key ring on S3 -----------------------------------------------------

def test_keys_come_from_kms_and_the_shared_s3_ring(production, tls_postgres, monkeypatch):
    """KMS and S3 are moto's (no AWS here); the users' data keys are in the TLS Postgres."""
    moto = pytest.importorskip("moto")
    from mercury.privacy.keys import forget_loaded_keys, load_keys
    from mercury.privacy.protect import user_token
    from mercury.privacy.userkeys import open_user_keys

    for name, value in {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        import boto3

        monkeypatch.setenv("MERCURY_KMS_KEY_ARN",
                           boto3.client("kms").create_key()["KeyMetadata"]["Arn"])
        boto3.client("s3").create_bucket(
            Bucket="mercurypay-privacy-keys",
            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        settings = production(privacy={"user_keys_postgres": tls_postgres.address()})
        forget_loaded_keys()
        token = user_token(load_keys(settings), "usr_1")
        user_keys = open_user_keys(settings)
        created = user_keys.keys_for(["usr_1"])["usr_1"]
        assert user_keys.get(created.key_id) == created
        assert _encrypted(user_keys._connection())
        assert user_keys.shred("usr_1") == 1
        user_keys.close()
        forget_loaded_keys()  # another pod: it reads the same ring, mints the same token
        assert user_token(load_keys(settings), "usr_1") == token
        listed = boto3.client("s3").list_objects_v2(Bucket="mercurypay-privacy-keys")
        assert [o["Key"] for o in listed["Contents"]] == ["keyring/privacy.json"]
    forget_loaded_keys()
    assert not settings.key_file.exists()  # no local key file stands in anywhere


# ---- warehouse: Snowflake through dbt ----------------------------------------------------------

def test_warehouse_runs_dbt_on_the_snowflake_target(production, fakesnow_server):
    from mercury.warehouse.dbt_runner import run_dbt

    settings = production()
    assert settings.warehouse.dbt_target == "snowflake"
    result = run_dbt(["debug"], target=settings.warehouse.dbt_target, settings=settings,
                     env_extra=fakesnow_server.dbt_env, timeout=300)
    assert "Connection test: [OK connection ok]" in result.output


# ---- knowledge index: OpenSearch ---------------------------------------------------------------

def test_knowledge_index_talks_to_the_configured_opensearch(production):
    import base64

    from mercury.retrieval.opensearch_index import REGISTRY, OpenSearchVectorIndex
    from tests.test_opensearch_index import FakeCluster

    settings = production()
    cluster = FakeCluster()
    cluster.on("POST", f"/{REGISTRY}/_search", (200, {"hits": {"hits": []}}))
    index = OpenSearchVectorIndex(settings.retrieval.index,  # type: ignore[arg-type]
                                  connection_class=cluster.connection_class())
    assert index.versions(settings.retrieval.alias) == []
    [connection] = cluster.connections
    assert connection.host == "https://vpc-mercury-knowledge.eu-west-1.es.amazonaws.com:443"
    credentials = base64.b64encode(b"mercury:opensearch-secret").decode()
    assert connection.headers["authorization"] == f"Basic {credentials}"


# ---- lake: Iceberg tables in the Glue catalog, data files on S3 --------------------------------

@pytest.fixture
def aws_server(monkeypatch):
    """moto as a server on a local port: S3 and Glue for every client, pyarrow's included."""
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-west-1",
                        "AWS_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(name, value)
    yield url
    server.stop()


def test_lake_runs_on_glue_and_s3(production, aws_server):
    import boto3

    from mercury.lake import tables
    from tests.lake_fixtures import transaction

    boto3.client("s3").create_bucket(Bucket="mercurypay-lake", CreateBucketConfiguration={
        "LocationConstraint": "eu-west-1"})
    settings = production(lake={"catalog_uri": aws_server, "s3_endpoint": aws_server})
    assert (settings.lake.catalog_type, settings.lake.warehouse) == \
        ("glue", "s3://mercurypay-lake/warehouse")

    records = [transaction(n) for n in range(6)]
    tables.upsert(settings, "transactions", records)
    tables.upsert(settings, "transactions", records[:3])  # a retried load: no duplicates
    stored = tables.read(settings, "transactions").to_pylist()
    assert sorted(r["event_id"] for r in stored) == sorted(r["event_id"] for r in records)

    glue = boto3.client("glue").get_table(DatabaseName="raw", Name="transactions")["Table"]
    assert glue["Parameters"]["table_type"].upper() == "ICEBERG"
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket="mercurypay-lake")["Contents"]]
    assert any(k.startswith("warehouse/raw.db/transactions/data/") and k.endswith(".parquet")
               for k in keys)


# ---- alerting: Managed Prometheus's Alertmanager, SigV4-signed --------------------------------

def test_a_failed_task_pages_managed_prometheus_signed(production, monkeypatch):
    """Airflow's failure callback under the production profile: a POST to the Alertmanager
    API signed for ``aps`` in the region (an unsigned one would be refused by AMP). The
    stand-in is an HTTP server that records what it got; AMP's check of the signature is
    not available here, so the signature is recomputed from what arrived."""
    import json
    import threading
    from datetime import datetime
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from types import SimpleNamespace

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from mercury.config import REPO_ROOT, ConfigError

    received: list[tuple[str, dict, bytes]] = []

    class Workspace(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Workspace)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDMWAA", "AWS_SECRET_ACCESS_KEY": "mwaa-secret",
                        "AWS_SESSION_TOKEN": "mwaa-token"}.items():
        monkeypatch.setenv(name, value)
    base = f"http://127.0.0.1:{server.server_port}/workspaces/ws-1/alertmanager"
    settings = production()
    assert settings.monitoring.alertmanager_sigv4_region == "eu-west-1"
    assert settings.monitoring.alertmanager_url.startswith("https://aps-workspaces.eu-west-1.")
    # Only the address changes, past the profile's own refusal of loopback addresses.
    settings = settings.model_copy(update={"monitoring": settings.monitoring.model_copy(
        update={"alertmanager_url": base})})
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    import mercury_airflow.tasks
    from mercury_airflow import alerting

    monkeypatch.setattr(mercury_airflow.tasks, "settings", lambda: settings)

    monkeypatch.setattr(alerting, "log", SimpleNamespace(exception=pytest.fail))
    try:
        ti = SimpleNamespace(dag_id="gdpr_erasure", task_id="erase_pending", run_id="r1")
        alerting.page_on_failure({"ti": ti, "exception": ValueError("usr_42")})
    finally:
        server.shutdown()
    [(path, headers, body)] = received
    assert path == "/workspaces/ws-1/alertmanager/api/v2/alerts"
    assert json.loads(body)[0]["labels"]["alertname"] == "AirflowTaskFailed"
    authorization = headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDMWAA/")
    assert "/eu-west-1/aps/aws4_request" in authorization
    assert headers["X-Amz-Security-Token"] == "mwaa-token"
    # The same request signed again at the same instant gives the same signature: what was
    # signed is what was sent (path, host, body).
    when = datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: when)
    again = AWSRequest(method="POST", url=f"{base}/api/v2/alerts", data=body,
                       headers={"Content-Type": headers["Content-Type"]})
    SigV4Auth(Credentials("AKIDMWAA", "mwaa-secret", "mwaa-token"), "aps",
              "eu-west-1").add_auth(again)
    assert again.headers["Authorization"] == authorization

    with pytest.raises(ConfigError, match="set monitoring.alertmanager_sigv4_region"):
        production(monitoring={"alertmanager_sigv4_region": None})

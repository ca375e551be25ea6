"""Typed configuration for every binding, in one place.

One setting picks the profile: ``MERCURY_PROFILE`` (``local`` by default, or ``production``).
The profile names a YAML file in ``config/``; ``MERCURY_CONFIG`` may point at another file
(tests do). Every section rejects unknown keys, so a typo fails loudly instead of silently
falling back to a default. Secrets are never in these files: a field ending in ``_env`` names
the environment variable that holds the secret.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "config"
PROFILES = ("local", "production")


class ConfigError(Exception):
    """The configuration cannot be used; the message says which file and field to fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisStoreConfig(_Section):
    """The online store on Redis (``type: redis``; ElastiCache cluster mode in production)."""

    type: Literal["redis"] = "redis"
    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    cluster: bool = False
    password_env: str | None = None
    # The context API's (asyncio) client: a dead store must fail within a request's budget,
    # so connecting is bounded tightly; reads are bounded by the request's own deadline and
    # the read timeout is only a backstop for a connection nobody waits on any more.
    connect_timeout_s: float = Field(0.05, gt=0)
    read_timeout_s: float = Field(1.0, gt=0)
    max_connections: int = Field(64, ge=1)
    # The jobs' (blocking) client, e.g. the streaming writer: a store that stops answering
    # (a host gone without a reset) raises after this long, to be retried, never hangs.
    job_timeout_s: float = Field(10.0, gt=0)
    # TLS (rediss; ElastiCache in-transit encryption). The server's certificate is checked
    # against ``ssl_ca_certs`` (None: the system's CAs) and its name against ``host``.
    # Production refuses anything less (``Settings``).
    ssl: bool = False
    ssl_ca_certs: Path | None = None
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"

    def connection_kwargs(self) -> dict[str, Any]:
        """What every redis-py client (blocking, asyncio, cluster) is built with."""
        password = os.environ.get(self.password_env) if self.password_env else None
        kwargs: dict[str, Any] = dict(host=self.host, port=self.port, password=password)
        if self.ssl:
            kwargs.update(ssl=True, ssl_cert_reqs=self.ssl_cert_reqs,
                          ssl_check_hostname=self.ssl_cert_reqs == "required",
                          ssl_ca_certs=str(self.ssl_ca_certs) if self.ssl_ca_certs else None)
        return kwargs


class MemoryStoreConfig(_Section):
    """A dict in this process (``type: memory``): unit tests and one-process tools only."""

    type: Literal["memory"] = "memory"


OnlineStoreConfig = Annotated[RedisStoreConfig | MemoryStoreConfig, Field(discriminator="type")]


class PostgresConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    user: str = "postgres"
    database: str = "mercury"
    password_env: str | None = None
    # libpq's TLS modes; ``prefer`` (libpq's own default) keeps the local server plaintext.
    # Production needs ``verify-full``: encrypted, the certificate chained to ``sslrootcert``
    # and naming ``host`` (``Settings`` refuses less).
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = \
        "prefer"
    sslrootcert: Path | None = None

    def conninfo(self, database: str | None = None) -> str:
        password = os.environ.get(self.password_env, "") if self.password_env else ""
        parts = [f"host={self.host}", f"port={self.port}", f"user={self.user}",
                 f"dbname={database or self.database}", "connect_timeout=5",
                 f"sslmode={self.sslmode}"]
        if self.sslrootcert is not None:
            parts.append(f"sslrootcert={self.sslrootcert}")
        if password:
            parts.append(f"password={password}")
        return " ".join(parts)


class OpsStateConfig(_Section):
    """Where the records an Airflow retry on another worker must see live: Flink deployment
    records and dead-letter replay ledgers (``mercury.ops.state``). Postgres, the local server
    here and RDS/Aurora in production; never a worker's disk."""

    type: Literal["postgres"] = "postgres"
    postgres: PostgresConfig | None = None  # None: the top-level ``postgres`` connection
    # Tests give each run its own schema; one name per deployment otherwise.
    schema_name: str = Field("ops", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # How long a deploy, stop or replay waits for another worker holding the same job's or
    # stream's lock before it gives up (a stop with savepoint of a large state takes minutes).
    lock_wait_s: float = Field(900.0, gt=0)

    def connection(self, default: PostgresConfig) -> PostgresConfig:
        return self.postgres or default


class FileEventLogConfig(_Section):
    """The local event log: one folder per stream of newline-delimited JSON files."""

    type: Literal["file"] = "file"
    root: Path
    batch_size: int = Field(5000, ge=1)
    # How often a Flink job lists the folders for new files: a floor on its freshness
    # (0..interval of waiting per file), paid in directory listings.
    discovery_interval_ms: int = Field(1000, ge=50)


class KafkaEventLogConfig(_Section):
    type: Literal["kafka"] = "kafka"
    bootstrap_servers: str
    schema_registry_url: str
    serialization: Literal["avro", "json"] = "avro"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "SASL_SSL"
    sasl_username_env: str | None = None
    sasl_password_env: str | None = None
    # How long a silent consumer keeps its partitions. librdkafka's mock cluster frees a
    # closed member's partitions only then, so tests on it shorten this.
    session_timeout_ms: int = Field(45_000, ge=6_000)


EventLogConfig = Annotated[FileEventLogConfig | KafkaEventLogConfig, Field(discriminator="type")]


class LakeConfig(_Section):
    """Iceberg: a pyiceberg SqlCatalog over a local folder, or Glue over S3 in production."""

    catalog_type: Literal["sql", "glue"] = "sql"
    warehouse: str
    catalog_uri: str | None = None  # glue: the Glue endpoint, when not AWS's own
    s3_endpoint: str | None = None  # glue: the S3 endpoint of the data files, likewise
    namespace: str = "raw"


class FlinkConfig(_Section):
    rest_url: str = "http://127.0.0.1:8081"
    conf_dir: Path = Path("infra/local/flink")
    default_parallelism: int = Field(1, ge=1)
    # The SQL online-features job's keyed state: RocksDB with incremental checkpoints (state
    # larger than memory, as in production) or the heap ("hashmap").
    state_backend: Literal["rocksdb", "hashmap"] = "rocksdb"
    # How long the SQL job folds changes before they move on (mini-batches): fewer, larger
    # state updates and writes against that much added latency.
    mini_batch_ms: int = Field(500, ge=1)
    # The online-features job's checkpoint interval; its part files (dead letters, lake
    # staging) roll as often, and are committed by the checkpoint after. Tests on the local
    # cluster shorten it: "caught up" waits for two checkpoints after the last line.
    checkpoint_interval_ms: int = Field(5_000, ge=200)


class AirflowConfig(_Section):
    home: Path
    api_port: int = Field(8080, ge=1, le=65535)
    parallelism: int = Field(4, ge=1, le=32)
    # The wait before a retry, for DAGs that do not set their own ([core]
    # default_task_retry_delay); MWAA takes the same value in its Airflow configuration.
    default_retry_delay_s: int = Field(60, ge=0)


class WarehouseConfig(_Section):
    dbt_target: Literal["local", "snowflake"] = "local"
    duckdb_path: Path | None = None


class LocalVectorConfig(_Section):
    """The embedded engine (LanceDB) in a local folder: one table per index version."""

    type: Literal["local"] = "local"
    path: Path
    # Below this many chunks a version is searched exactly (flat); above it an HNSW index is
    # built, and new rows are folded into it every ``optimize_every`` writes.
    ann_min_rows: int = Field(20_000, ge=1)
    optimize_every: int = Field(200, ge=1)


class OpenSearchVectorConfig(_Section):
    """OpenSearch kNN: one index per version behind a read alias."""

    type: Literal["opensearch"] = "opensearch"
    hosts: list[str]
    username_env: str | None = None
    password_env: str | None = None
    shards: int = Field(3, ge=1)
    replicas: int = Field(2, ge=0)
    hnsw_m: int = Field(16, ge=2)
    hnsw_ef_construction: int = Field(256, ge=8)
    hnsw_ef_search: int = Field(128, ge=8)


VectorIndexConfig = Annotated[LocalVectorConfig | OpenSearchVectorConfig,
                              Field(discriminator="type")]


class RetrievalConfig(_Section):
    """The knowledge index: the alias readers follow, the model and chunking of new builds."""

    alias: str = "knowledge"
    index: VectorIndexConfig
    embedding_model: Literal["all-MiniLM-L6-v2", "hashing-384"] = "all-MiniLM-L6-v2"
    max_tokens: int = Field(200, ge=16, le=256)
    overlap_tokens: int = Field(32, ge=0)
    embed_batch_size: int = Field(64, ge=1)
    languages: tuple[str, ...] = ("en", "fr", "de", "es")
    max_body_chars: int = Field(100_000, ge=1_000)
    query_cache_size: int = Field(1024, ge=0)


class PrivacyConfig(_Section):
    """Where the keys that protect personal data come from (mercury/privacy/keys.py).

    ``local_file``: a key file under ``<data_dir>/keys/`` (mode 0600, created on first use,
    never committed) stands in for KMS. ``kms``: AWS KMS, the key ``kms_key_id`` (or the
    variable ``kms_key_id_env`` names). The key ring (wrapped service keys, one document every
    process reads) is at ``keyring_uri`` (``s3://bucket/key``; locally a file beside the key
    file when unset).
    """

    key_source: Literal["local_file", "kms"] = "local_file"
    kms_key_id: str | None = None
    kms_key_id_env: str | None = None
    keyring_uri: str | None = None
    # Where the users' wrapped data keys live (privacy.user_keys); None: ``postgres``. In
    # production its own role, so the CDC user cannot read or delete keys.
    user_keys_postgres: PostgresConfig | None = None
    # A serving process's spool data key seals at most this many questions before the next
    # one is made: random 96-bit nonces stay far below NIST SP 800-38D's 2^32 per key
    # (mercury/serving/audit_sealing.py has the arithmetic).
    spool_key_max_messages: int = Field(1 << 24, ge=1, le=1 << 32)

    def resolved_kms_key_id(self) -> str | None:
        """The KMS key (id or ARN): configured, or from the variable ``kms_key_id_env``."""
        if self.kms_key_id:
            return self.kms_key_id
        value = os.environ.get(self.kms_key_id_env) if self.kms_key_id_env else None
        if not value and self.key_source == "kms":
            raise ConfigError(f"privacy.kms_key_id_env names {self.kms_key_id_env!r}, which is "
                              "not set in the environment" if self.kms_key_id_env else
                              "privacy.key_source is 'kms' but privacy.kms_key_id is not set")
        return value


class CallerConfig(_Section):
    """A service allowed to call the context API, and its rate limit (per serving process)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,40}$")
    requests_per_s: float = Field(5_000.0, gt=0)
    burst: int = Field(500, ge=1)


class IdentityConfig(_Section):
    """The identity provider whose end-user assertions the context API accepts: its issuer
    and its published public keys (a JWKS document; locally written by
    ``mercury.serving.local_idp``, in production mounted from the provider). The serving
    process never holds a signing key."""

    issuer: str = "https://idp.mercurypay.local"
    jwks_path: Path | None = None  # None: the local stand-in's, ``<data_dir>/idp/jwks.json``
    # An assertion is one question's: short-lived, and used once (a jti replay cache).
    max_lifetime_s: int = Field(300, ge=1, le=3600)
    clock_skew_s: int = Field(30, ge=0, le=300)
    replay_cache_size: int = Field(500_000, ge=1_000)


class ServingConfig(_Section):
    """The context API: where it listens, its latency budget, admission and fallbacks."""

    host: str = "127.0.0.1"
    port: int = Field(8700, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    # Everything before the model must fit in ``budget_ms``; each source also has its own
    # deadline inside it, so one slow store cannot eat the whole budget. A caller may ask for
    # a budget of its own between ``budget_floor_ms`` and 250 ms.
    budget_ms: int = Field(60, ge=5)
    budget_floor_ms: int = Field(10, ge=1)
    # A caller may pin the as-of time (replays): no later than this ahead of our clock (values
    # "as of tomorrow" are guesses), no earlier than the online store keeps values (its TTLs;
    # history is the batch path's).
    as_of_future_skew_ms: int = Field(5_000, ge=0)
    as_of_max_age_s: int = Field(35 * 86_400, ge=1)
    features_deadline_ms: int = Field(20, ge=1)
    # Sized from a measurement (docs/SERVING.md, "Retrieval budget"): a question's embedding
    # and search at p99 on this 2-core machine with other work running.
    retrieval_deadline_ms: int = Field(50, ge=1)
    top_k: int = Field(5, ge=1, le=20)
    # Searches allowed to wait for the process's retrieval thread; beyond, the process is
    # saturated and the request is shed (a search missing its deadline cannot be cancelled).
    retrieval_queue: int = Field(4, ge=1)
    # Torch threads for question embeddings: 1 keeps a 20 ms embedding from becoming 400 ms
    # when anything else runs on the host (docs/PERFORMANCE.md, knowledge index, finding 3).
    embed_threads: int = Field(1, ge=1)
    # Admission (mercury/serving/admission.py): at most this many requests are worked on at
    # once per process (one core, ~1.5 ms of CPU a request: 8 finish well inside the 20 ms
    # feature deadline); the next ``admission_queue`` wait at most ``admission_wait_ms`` for a
    # slot; beyond, 503 at once.
    max_in_flight: int = Field(8, ge=1)
    admission_queue: int = Field(8, ge=0)
    admission_wait_ms: float = Field(20.0, ge=0)
    # Refuse new requests (503) while the event loop lags more than this: the process is
    # saturated and queueing more would only miss every budget (mercury/serving/overload.py).
    overload_lag_ms: float = Field(30.0, gt=0)
    # ... and only with at least this many requests in the process: a lagging loop with one
    # request in it is the host pausing us, which refusing requests would not help.
    overload_min_in_flight: int = Field(4, ge=1)
    # A store's breaker opens on evidence about the store only: at least
    # ``breaker_min_calls`` calls in the last ``breaker_window_s``, of which at least
    # ``breaker_failure_rate`` failed; it lets a trial through after ``breaker_reset_s``.
    breaker_min_calls: int = Field(5, ge=1)
    breaker_failure_rate: float = Field(0.5, gt=0, le=1)
    breaker_window_s: float = Field(10.0, gt=0)
    breaker_reset_s: float = Field(2.0, gt=0)
    # Last values served per (user, set), the fallback when the store fails: ~20 KB a user.
    snapshot_max_users: int = Field(10_000, ge=0)
    snapshot_max_age_s: int = Field(24 * 3600, ge=1)
    # Fallback priors (segment averages, mercury/features/offline/priors.py) are copied from
    # the online store into each process's memory this often, so a Redis outage still has
    # them (docs/SERVING.md, "Fallback priors").
    priors_refresh_s: float = Field(300.0, gt=0)
    identity: IdentityConfig = IdentityConfig()
    # How often spooled audit records are shipped to the event log (they are safe in the
    # spool meanwhile; see mercury/serving/audit.py).
    audit_ship_interval_s: float = Field(1.0, gt=0)
    callers: tuple[CallerConfig, ...] = (CallerConfig(name="llm-gateway"),)


class SparkConfig(_Section):
    """The batch jobs' Spark session (``mercury.features.executors.spark.session``). Locally
    ``local[2]``; on EMR ``master: null`` leaves master and resources to spark-submit."""
    app_name: str = "mercury"
    master: str | None = "local[2]"
    shuffle_partitions: int = Field(4, ge=1)
    driver_memory: str = "2g"
    log_level: str = "ERROR"
    arrow_batch_rows: int = Field(20_000, ge=1)
    conf: dict[str, str] = Field(default_factory=dict)  # anything else, passed through


class LocalSparkSubmitConfig(_Section):
    """Batch jobs run in the calling process on ``spark`` (``local[2]``): the local default."""

    type: Literal["local"] = "local"


class EmrServerlessSubmitConfig(_Section):
    """Batch jobs run as EMR Serverless job runs (``mercury.batch``; docs/BATCH.md says why
    Serverless). Ids come from Terraform outputs through the environment (``*_env``): the
    file names where they are, never what they are."""

    type: Literal["emr_serverless"] = "emr_serverless"
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    application_id_env: str = "MERCURY_EMR_APPLICATION_ID"
    execution_role_arn_env: str = "MERCURY_EMR_EXECUTION_ROLE_ARN"
    # Where the job's code goes: s3://<code_bucket>/<code_prefix>/<content hash>/...
    code_bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    code_prefix: str = "spark/code"
    logs_uri: str | None = None  # s3:// folder for the driver's and executors' logs
    # mercury's own dependencies (pydantic, pyiceberg, redis ...), packed as a Python
    # environment by CI on the EMR image (venv-pack); None: the application's image has them.
    python_env_archive: str | None = None
    # The Iceberg Spark runtime and the AWS bundle (S3FileIO, GlueCatalog), for the Spark and
    # Scala of the application's release (emr-spark-8.0.0: Spark 4.0, Scala 2.13, Iceberg
    # 1.10.1); Spark resolves them (spark.jars.packages) when a job run starts.
    iceberg_packages: tuple[str, ...] = (
        "org.apache.iceberg:iceberg-spark-runtime-4.0_2.13:1.10.1",
        "org.apache.iceberg:iceberg-aws-bundle:1.10.1",
    )
    glue_catalog_name: str = Field("glue", pattern=r"^[a-z_][a-z0-9_]*$")
    spark_conf: dict[str, str] = Field(default_factory=dict)  # sizes, passed through
    # The secrets a job reads from its environment (a variable a ``*_env`` field of these
    # settings names, e.g. online_store.password_env), by reference: variable -> Secrets
    # Manager secret (its name or ARN). The job run carries only the references, in its
    # settings file; the entry point fetches the values when it starts
    # (mercury.batch.secrets), as the job role, which Terraform lets read exactly these.
    secrets: dict[str, str] = Field(default_factory=dict)
    aws_conn_id: str = "aws_default"  # the Airflow connection (MWAA: its execution role)
    poll_interval_s: float = Field(30.0, gt=0)
    max_wait_s: int = Field(6 * 3600, ge=1)
    execution_timeout_minutes: int = Field(360, ge=1)

    @model_validator(mode="after")
    def _secrets_are_references(self) -> EmrServerlessSubmitConfig:
        for variable, secret_id in self.secrets.items():
            if not _ENV_NAME.fullmatch(variable):
                raise ValueError(f"spark_submit.secrets: {variable!r} is not an environment "
                                 "variable name")
            if not (_SECRET_ARN.fullmatch(secret_id) or _SECRET_NAME.fullmatch(secret_id)):
                raise ValueError(
                    f"spark_submit.secrets.{variable} is not a Secrets Manager secret name "
                    "('<deployment>/<component>/<what>') or ARN: the value itself never goes "
                    "in the settings file")
        return self

    def resolved(self, field: Literal["application_id", "execution_role_arn"]) -> str:
        """The id the environment variable named by ``<field>_env`` holds."""
        variable = getattr(self, f"{field}_env")
        value = os.environ.get(variable, "")
        if not value:
            raise ConfigError(f"spark_submit.{field}_env names {variable!r}, which is not set in "
                              "the environment (a Terraform output of the EMR module)")
        return value


_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# Terraform names every secret by path (``mercury-euw1-online/redis-auth``): a name without a
# '/' is refused, so a token pasted here in place of its name is caught, not shipped.
_SECRET_NAME = re.compile(r"[A-Za-z0-9_+=.@-]+(/[A-Za-z0-9_+=.@-]+)+")
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:"
                         r"[A-Za-z0-9/_+=.@-]+")

SparkSubmitConfig = Annotated[LocalSparkSubmitConfig | EmrServerlessSubmitConfig,
                              Field(discriminator="type")]


class OfflineConfig(_Section):
    """The batch path: feature history tables, training sets, consistency and blue/green."""
    namespace: str = "features"  # Iceberg namespace of the feature history tables
    # The consistency gate: the least share of matching values, per feature, that promotes.
    consistency_min_share: float = Field(1.0, ge=0.0, le=1.0)
    consistency_sample_entities: int = Field(10_000, ge=1)
    # Warm start: how long the backfilled per-entity state waits for the streaming job.
    warm_start_state_ttl_s: int = Field(7 * 86_400, ge=60)
    # After a promotion, the previous version's keys expire this long after (rollback window).
    retire_after_s: int = Field(86_400, ge=0)
    # Fallback priors: a segment of fewer users than this gets the population's prior (an
    # average of a handful of users is one user's values, and names them); the published
    # priors expire after ``priors_ttl_s`` (three daily runs missed: no prior beats a stale one).
    priors_min_count: int = Field(50, ge=1)
    priors_ttl_s: int = Field(3 * 86_400, ge=3_600)
    # Training sets: "duckdb" builds them on one machine, "spark" on the cluster; "auto" takes
    # DuckDB where jobs run locally and Spark where they run on EMR (mercury.features.offline
    # .engine). Both are held to the reference executor.
    training_engine: Literal["auto", "spark", "duckdb"] = "auto"


class MonitoringConfig(_Section):
    """Prometheus (local stack) and the freshness probe (``mercury monitor probe``)."""
    prometheus_port: int = Field(9090, ge=1, le=65535)
    # How often Prometheus scrapes and evaluates the rules (the rules' windows are >= 5 min,
    # so once a minute is enough in production; a drill test shortens both).
    scrape_interval_s: int = Field(15, ge=1)
    evaluation_interval_s: int = Field(60, ge=1)
    # Where Prometheus sends alerts and Airflow's failure callback pages (the local stack
    # runs Alertmanager here when the host is local).
    alertmanager_url: str = "http://127.0.0.1:9093"
    # Amazon Managed Service for Prometheus's Alertmanager takes only SigV4-signed requests
    # (service ``aps``) for its region; None: plain HTTP, the local Alertmanager.
    alertmanager_sigv4_region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    # The probe writes a canary transaction through the real pipeline this often and exports
    # how long it took to be readable in the online store (the freshness SLI).
    probe_port: int = Field(9464, ge=1, le=65535)
    probe_interval_s: float = Field(5.0, gt=0)
    # A canary not readable by then counts as lost (and as this late in the histogram).
    probe_timeout_s: float = Field(30.0, gt=0)
    # Canaries are AUTHs of users of their own, so that no real user's context holds them.
    canary_user_prefix: str = "usr_canary_"
    # The node exporter serving <data_dir>/metrics (batch jobs' text files) to Prometheus.
    textfile_exporter_port: int = Field(9100, ge=1, le=65535)
    # Consumer groups whose lag the probe exports (group -> the stream it reads): the ones
    # that run continuously or on a schedule, the knowledge indexer and the hourly audit
    # loads (audit_warehouse). A group nobody runs would only ever lag and page for nothing.
    consumer_groups: dict[str, str] = {
        "knowledge-indexer": "knowledge_documents",
        "lake-loader.inference_audit": "inference_audit",
        "lake-loader.assistant_safety_outcomes": "assistant_safety_outcomes"}


class AnomalyConfig(_Section):
    """The hourly anomaly gate of the raw streams (mercury/quality/anomaly.py, docs/QUALITY.md).

    An hour is the records of a stream that arrived in it (``ingest_ts``). A threshold that is
    relative compares with the seasonal baseline of hours that were promoted before."""
    streams: tuple[str, ...] = ("transactions", "user_activity")
    # Columns whose value mix is compared with the trailing week by PSI.
    categorical: dict[str, tuple[str, ...]] = {
        "transactions": ("currency", "event_type", "country"),
        "user_activity": ("event_type", "platform")}
    numeric: dict[str, tuple[str, ...]] = {"transactions": ("amount",)}
    # Volume: the median of the same hour-of-week over the trailing weeks once
    # ``min_weeks`` of them were promoted, else of the same hour-of-day over trailing days.
    baseline_weeks: int = Field(4, ge=1)
    min_weeks: int = Field(2, ge=1)
    baseline_days: int = Field(7, ge=1)
    min_days: int = Field(3, ge=1)
    volume_min_ratio: float = Field(0.5, gt=0, lt=1)  # an hour below half its baseline
    volume_max_ratio: float = Field(3.0, gt=1)  # paydays double volume; tripling is not one
    volume_min_expected: int = Field(50, ge=1)  # below this, Poisson noise alone breaks ratios
    # Distributions: PSI of the hour against the trailing ``psi_window_hours``.
    psi_max: float = Field(0.2, gt=0)
    psi_bins: int = Field(10, ge=2)  # numeric columns: quantile bins of the reference
    psi_window_hours: int = Field(168, ge=1)
    psi_min_records: int = Field(200, ge=1)  # in the hour; fewer: sampling noise dominates
    psi_min_reference: int = Field(2_000, ge=1)
    # Rates: absolute rise over the baseline hours' rate, per column / field.
    null_rate_max_rise: float = Field(0.10, gt=0, le=1)
    unknown_field_rate_max_rise: float = Field(0.10, gt=0, le=1)
    duplicate_rate_max: float = Field(0.15, ge=0, le=1)
    late_rate_max: float = Field(0.10, ge=0, le=1)
    late_after_ms: int = Field(3_600_000, ge=1)  # arrival this long after event time: late

    @model_validator(mode="after")
    def _weeks_fit(self) -> AnomalyConfig:
        if self.min_weeks > self.baseline_weeks or self.min_days > self.baseline_days:
            raise ValueError("anomaly.min_weeks/min_days cannot exceed baseline_weeks/days")
        return self


class DriftModelConfig(_Section):
    """One model version the audit names (``llm_model_version``) and the training set it was
    built on: the Parquet folder ``spark_jobs.training_set`` wrote (one folder per model
    version, never rewritten) and the feature set refs it was built from, whose served
    versions are the ones comparable with it."""

    training_set: str  # a local folder or an s3:// URI
    feature_sets: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _refs_are_versioned(self) -> DriftModelConfig:
        import re

        bad = [r for r in self.feature_sets if not re.fullmatch(r"[a-z][a-z0-9_]*\.v[0-9]+", r)]
        if bad:
            raise ValueError(f"feature_sets: {bad} are not refs '<set>.v<version>'")
        return self


class DriftConfig(_Section):
    """Served feature values against the training distribution of the model that used them
    (``mercury.drift.measure``; docs/DRIFT.md). PSI below ``psi_warn`` is stable, from it to
    ``psi_drift`` a moderate shift worth a look, above ``psi_drift`` drifted (alert and the
    retraining asset)."""

    psi_warn: float = Field(0.1, gt=0)
    psi_drift: float = Field(0.2, gt=0)
    # Numeric features: this many quantile bins of the training values.
    bins: int = Field(10, ge=2, le=100)
    # An empty bin's share is floored at this, so ln(actual/expected) stays finite.
    epsilon: float = Field(1e-4, gt=0, lt=0.01)
    # Fewer served values than this in the day: reported, not judged (PSI on a handful of
    # values is noise).
    min_served: int = Field(100, ge=1)
    # The registry: model version -> its training set.
    models: dict[str, DriftModelConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _warn_below_drift(self) -> DriftConfig:
        if self.psi_warn >= self.psi_drift:
            raise ValueError(f"psi_warn ({self.psi_warn}) must be below psi_drift "
                             f"({self.psi_drift})")
        return self


class Settings(_Section):
    profile: Literal["local", "production"]
    data_dir: Path
    online_store: OnlineStoreConfig = RedisStoreConfig()
    postgres: PostgresConfig = PostgresConfig()
    event_log: EventLogConfig
    lake: LakeConfig
    flink: FlinkConfig = FlinkConfig()
    airflow: AirflowConfig
    warehouse: WarehouseConfig = WarehouseConfig()
    retrieval: RetrievalConfig
    serving: ServingConfig = ServingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    spark: SparkConfig = SparkConfig()
    offline: OfflineConfig = OfflineConfig()
    ops_state: OpsStateConfig = OpsStateConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    spark_submit: SparkSubmitConfig = LocalSparkSubmitConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _production_holds_no_local_stand_in(self) -> Settings:
        if self.profile == "production":
            problems = production_problems(self)
            if problems:
                raise ValueError("; ".join(problems))
        return self

    @property
    def run_dir(self) -> Path:
        """Pid files of the processes the local stack started (and only those)."""
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def metrics_dir(self) -> Path:
        """Batch jobs' metrics in Prometheus's text format, served by the local stack's node
        exporter (its textfile collector) for Prometheus to scrape."""
        return self.data_dir / "metrics"

    @property
    def key_file(self) -> Path:
        """The local stand-in for KMS (``privacy.key_source: local_file``)."""
        return self.data_dir / "keys" / "privacy.json"


def production_problems(settings: Settings) -> list[str]:
    """What in a production profile would run on a local stand-in: each names its setting.
    A pod on a local key file mints its own user tokens and keeps keys on its volume; one
    without a published key set would create the local identity provider's signing key."""
    privacy, problems = settings.privacy, []
    if privacy.key_source != "kms":
        problems.append(f"privacy.key_source is {privacy.key_source!r}: production needs "
                        "'kms' (the key file is the local stand-in for KMS)")
    if not (privacy.kms_key_id or privacy.kms_key_id_env):
        problems.append("privacy.kms_key_id (or privacy.kms_key_id_env) is not set: "
                        "production wraps its keys with KMS")
    if not (privacy.keyring_uri or "").startswith("s3://"):
        problems.append("privacy.keyring_uri must be an s3:// object shared by every pod "
                        "(a file per host gives each pod its own user tokens)")
    if settings.serving.identity.jwks_path is None:
        problems.append("serving.identity.jwks_path is not set: production reads the identity "
                        "provider's published keys (without it the local stand-in's signing "
                        "key would be created)")
    # Personal and card data cross these connections: never in clear, never to a server
    # whose certificate is not checked.
    store = settings.online_store
    if isinstance(store, RedisStoreConfig) and not store.ssl:
        problems.append("online_store.ssl must be true in production (TLS to Redis)")
    if isinstance(store, RedisStoreConfig) and store.ssl_cert_reqs != "required":
        problems.append("online_store.ssl_cert_reqs must be 'required' in production")
    alertmanager = urlsplit(settings.monitoring.alertmanager_url).hostname or ""
    if alertmanager in ("127.0.0.1", "localhost"):
        problems.append("monitoring.alertmanager_url is on loopback: a production page would "
                        "reach no one")
    if alertmanager.startswith("aps-workspaces.") and not \
            settings.monitoring.alertmanager_sigv4_region:
        problems.append("monitoring.alertmanager_url is Managed Prometheus's, which refuses "
                        "unsigned requests: set monitoring.alertmanager_sigv4_region")
    databases = {"postgres": settings.postgres,
                 "privacy.user_keys_postgres": settings.privacy.user_keys_postgres,
                 "ops_state.postgres": settings.ops_state.postgres}
    for name, database in databases.items():
        if database is not None and database.sslmode != "verify-full":
            problems.append(f"{name}.sslmode must be 'verify-full' in production, "
                            f"not {database.sslmode!r}")
    problems.extend(_batch_problems(settings))
    return problems


def _batch_problems(settings: Settings) -> list[str]:
    """A production backfill on the Airflow worker's own Spark would run 2 PB on MWAA."""
    problems = []
    if settings.spark_submit.type != "emr_serverless":
        problems.append("spark_submit.type must be 'emr_serverless' in production (local runs "
                        "Spark inside the Airflow worker)")
    if settings.spark.master is not None and settings.spark.master.startswith("local"):
        problems.append(f"spark.master is {settings.spark.master!r}: production leaves the "
                        "master to EMR (spark.master: null)")
    if isinstance(settings.spark_submit, EmrServerlessSubmitConfig):
        problems.extend(_job_secret_problems(settings, settings.spark_submit))
    return problems


def _job_secret_problems(settings: Settings, submit: EmrServerlessSubmitConfig) -> list[str]:
    """A job run's secrets travel by reference only: every secret a job reads is listed in
    ``spark_submit.secrets`` (a misspelt variable there leaves the real one missing), and no
    Spark conf (readable by anyone who may list job runs) holds a secret's value."""
    problems = []
    named = _env_fields(settings.model_dump())
    secret_variables = {v for field, v in named.items() if field.endswith("password_env")}
    # What the jobs read: the online store's password (warm start writes the store and the
    # consistency gate reads it, both from the driver).
    store = settings.online_store
    needed = {store.password_env} if isinstance(store, RedisStoreConfig) and \
        store.password_env else set()
    for variable in sorted(needed - set(submit.secrets)):
        problems.append(f"spark_submit.secrets has no {variable}: the warm start and "
                        "consistency job runs would reach the online store without its "
                        "password (name its Secrets Manager secret there)")
    for section, conf in (("spark.conf", settings.spark.conf),
                          ("spark_submit.spark_conf", submit.spark_conf)):
        for key in conf:
            env_name = key.rsplit("Env.", 1)[1] if "Env." in key else None
            if env_name in secret_variables | set(submit.secrets) \
                    or _SECRET_WORD.search(key.lower()):
                problems.append(f"{section}.{key} would carry a secret's value in the job run "
                                "(visible to whoever may read job runs): list the variable in "
                                "spark_submit.secrets instead")
    return problems


# Keys that name a secret themselves (spark.authenticate.secret, ...); not "credential",
# which also names providers (client.credentials-provider) rather than values.
_SECRET_WORD = re.compile(r"password|passwd|secret|token")


def _env_fields(node: Any, path: str = "") -> dict[str, str]:
    """Every ``*_env`` setting (dotted path -> the variable it names)."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).endswith("_env") and isinstance(value, str):
                found[where] = value
            else:
                found |= _env_fields(value, where)
    elif isinstance(node, (list, tuple)):
        for index, item in enumerate(node):
            found |= _env_fields(item, f"{path}[{index}]")
    return found


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in the file are relative to the repository root, not the caller's cwd."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out[key] = _resolve_paths(value, base)
        elif isinstance(value, str) and key in _PATH_KEYS and not _is_uri(value):
            out[key] = str((base / value).resolve()) if not Path(value).is_absolute() else value
        else:
            out[key] = value
    return out


_PATH_KEYS = {"data_dir", "root", "warehouse", "conf_dir", "home", "duckdb_path", "path",
              "ssl_ca_certs", "sslrootcert", "training_set"}


def _is_uri(value: str) -> bool:
    return "://" in value


def config_path(profile: str | None = None) -> Path:
    explicit = os.environ.get("MERCURY_CONFIG")
    if explicit and profile is None:
        return Path(explicit)
    profile = profile or os.environ.get("MERCURY_PROFILE", "local")
    if profile not in PROFILES:
        raise ConfigError(
            f"MERCURY_PROFILE={profile!r} is not a profile; use one of {', '.join(PROFILES)}"
        )
    return CONFIG_DIR / f"{profile}.yaml"


def load_settings(profile: str | None = None) -> Settings:
    path = config_path(profile)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    try:
        return Settings.model_validate(_resolve_paths(raw, REPO_ROOT))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc

import pytest

from mercury.config import ConfigError, FileEventLogConfig, KafkaEventLogConfig, load_settings
from tests.conftest import write_config


def test_local_profile_binds_everything_to_this_machine(monkeypatch):
    monkeypatch.delenv("MERCURY_CONFIG", raising=False)
    monkeypatch.setenv("MERCURY_PROFILE", "local")
    settings = load_settings()
    assert settings.profile == "local"
    assert isinstance(settings.event_log, FileEventLogConfig)
    assert settings.event_log.root.is_absolute()  # relative paths resolve against the repo
    assert settings.online_store.type == "redis" and settings.online_store.host == "127.0.0.1"
    assert settings.flink.rest_url.endswith(":8081")


def test_production_profile_binds_kafka_and_glue_without_secrets(monkeypatch):
    monkeypatch.delenv("MERCURY_CONFIG", raising=False)
    monkeypatch.setenv("MERCURY_PROFILE", "production")
    settings = load_settings()
    assert isinstance(settings.event_log, KafkaEventLogConfig)
    assert settings.lake.catalog_type == "glue" and settings.online_store.cluster
    assert settings.event_log.sasl_password_env == "MERCURY_KAFKA_PASSWORD"
    # Deployment records and replay ledgers in the shared database, under a role of their own.
    ops = settings.ops_state.connection(settings.postgres)
    assert (ops.user, ops.database, ops.password_env) == (
        "mercury_ops", "mercury_ops", "MERCURY_OPS_PG_PASSWORD")


def test_unknown_profile_is_refused_with_the_choices(monkeypatch):
    monkeypatch.delenv("MERCURY_CONFIG", raising=False)
    monkeypatch.setenv("MERCURY_PROFILE", "staging")
    with pytest.raises(ConfigError, match="local, production"):
        load_settings()


def test_a_typo_in_a_section_names_the_field(tmp_path, monkeypatch):
    path = write_config(tmp_path, online_store={"prot": 6380})
    monkeypatch.setenv("MERCURY_CONFIG", str(path))
    with pytest.raises(ConfigError, match=r"redis\.prot: Extra inputs are not permitted"):
        load_settings()


def test_a_wrong_value_names_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("MERCURY_CONFIG",
                       str(write_config(tmp_path, online_store={"port": 70000})))
    with pytest.raises(ConfigError, match=r"redis\.port"):
        load_settings()

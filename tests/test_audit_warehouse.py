"""The assistant's audit trail, from the streams to the compliance marts.

Audit records and safety outcomes are produced to the event log as the context API and the
LLM serving tier ship them (at-least-once: copies, retried reports, an outcome ahead of its
request), validated into the lake by ``load_stream``, and built by dbt: on DuckDB over the
Iceberg lake, and in Snowflake's dialect on a fakesnow server.
"""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime, timedelta

import duckdb
import orjson
import pyarrow as pa
import pytest

from mercury.config import REPO_ROOT, load_settings
from mercury.eventlog import encode_record, open_producer
from mercury.lake import tables
from mercury.lake.load import load_stream
from mercury.lake.tables import arrow_schema
from mercury.warehouse.dbt_runner import run_dbt
from tests.conftest import write_config
from tests.lake_fixtures import snowflake_source_ddl

COMPLIANCE_MODELS = "+compliance_assistant_context+"
MASKED = "***masked***"
DAY_MS = 86_400_000
T0 = 1_709_640_000_000  # 2024-03-05T12:00:00Z


def _ts(epoch_ms: int) -> datetime:
    """A stream timestamp as the warehouse shows it: UTC wall-clock, no zone."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).replace(tzinfo=None)


def audit_record(request_id: str, at_ms: int, **overrides) -> dict:
    """An inference_audit v2 record as the context API ships it (times in epoch ms)."""
    record = {
        "request_id": request_id,
        "event_ts": at_ms,
        "caller": "mobile-bff",
        "user_token": "ut_" + "a" * 32,
        "question": "enc1:k2024:bm9uY2V8Y2lwaGVydGV4dHx0YWc=",
        "question_redacted": "why was my card declined at ####?",
        "intent": "why_declined",
        "fetched_parts": ["features.declines", "features.risk", "documents"],
        "retrieved_chunk_ids": ["policy-7:3:ab12", "policy-7:4:cd34", "help:fr:refunds:0:ef56"],
        "retrieved_chunk_scores": [0.92, 0.81, 0.64],
        "feature_versions": {"declines": 3, "risk": 1},
        "feature_newest_event_ms": {"declines": at_ms - 4_000, "risk": None},
        "features_as_of": at_ms,
        "served_features_json": '{"declines":{"count_24h":2},"risk":{"flagged":false}}',
        "index_version": "knowledge__minilm__c128__1709500000000",
        "embedding_model": "all-MiniLM-L6-v2",
        "llm_model_version": "assistant-llm-2024-02",
        "stage_latency_ms": {"intent": 0.2, "features": 4.1, "documents": 21.5},
        "total_latency_ms": 27.3,
        "degraded_parts": [],
        "assertion_id": f"jti-{request_id}",
        "served_from": "context-api-7f9c:1",
    }
    record.update(overrides)
    return record


def safety_outcome(request_id: str, at_ms: int, **overrides) -> dict:
    record = {
        "request_id": request_id,
        "event_ts": at_ms,
        "caller": "llm-serving",
        "outcome": "ALLOWED",
        "categories": [],
        "llm_model_version": "assistant-llm-2024-02",
        "safety_model_version": "guard-3.1",
        "answer_sha256": "9f" * 32,
        "answer_latency_ms": 180.0,
    }
    record.update(overrides)
    return record


USER_A = "ut_" + "a" * 32
USER_B = "ut_" + "b" * 32

# Shipped before the first load. req-1 twice (a spool shipped again after a crash).
FIRST_AUDIT = [
    audit_record("req-1", T0),
    audit_record("req-1", T0),
    audit_record("req-2", T0 + 60_000, intent="spending_summary",
                 question_redacted="summarize my spending this week",
                 fetched_parts=["features.spending", "features.purchases"],
                 retrieved_chunk_ids=[], retrieved_chunk_scores=None,
                 feature_versions={"spending": 5, "purchases": 2},
                 feature_newest_event_ms={"spending": T0, "purchases": T0 - 1_000}),
    # Documents only: no feature set read, so the feature maps are null.
    audit_record("req-3", T0 + 120_000, user_token=USER_B, intent="merchant_help",
                 fetched_parts=["documents"], feature_versions=None,
                 feature_newest_event_ms=None, served_features_json=None,
                 retrieved_chunk_ids=["help-returns:0:aa11"], retrieved_chunk_scores=[0.77]),
    # Degraded: risk from the snapshot, the document search unavailable (so no chunk).
    audit_record("req-4", T0 + DAY_MS, user_token=USER_B,
                 degraded_parts=["features.risk:snapshot", "documents:unavailable"],
                 retrieved_chunk_ids=[], retrieved_chunk_scores=[]),
]
# Shipped before the second load: req-1 once more, stamped three hours later. The loader looks
# for stored copies only within the event times of the batch, so it cannot see the first.
SECOND_AUDIT = [
    audit_record("req-1", T0 + 3 * 3_600_000, served_from="context-api-reshipped:2"),
]
BROKEN_AUDIT = {k: v for k, v in audit_record("req-broken", T0).items() if k != "user_token"}

FIRST_OUTCOMES = [
    safety_outcome("req-1", T0 + 900, outcome="BLOCKED", categories=["pii_leak"]),
    safety_outcome("req-2", T0 + 60_700),
    safety_outcome("req-4", T0 + DAY_MS + 800, outcome="MODIFIED",
                   categories=["financial_advice", "tone"]),
    # The outcome of a request whose audit record has not arrived (yet).
    safety_outcome("req-9", T0 + 5_000, outcome="ALLOWED"),
]
# A retried report of req-1, decided "later" by the retrying client's clock.
SECOND_OUTCOMES = [
    safety_outcome("req-1", T0 + 7_200_000, outcome="BLOCKED", categories=["pii_leak"],
                   caller="llm-serving-retry"),
]


def _ship(settings, writer_id: str, audit: list[dict], outcomes: list[dict],
          raw: list[bytes] = ()) -> None:
    with open_producer(settings, writer_id=writer_id) as producer:
        for record in audit:
            producer.send("inference_audit", encode_record(settings, "inference_audit", record),
                          key=record["request_id"])
        for payload in raw:
            producer.send("inference_audit", payload)
        for record in outcomes:
            producer.send("assistant_safety_outcomes",
                          encode_record(settings, "assistant_safety_outcomes", record),
                          key=record["request_id"])


def _rows(con, sql: str, params=None) -> list[dict]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# --- the lake -------------------------------------------------------------------------------


def test_audit_contracts_map_to_lake_columns():
    audit = arrow_schema("inference_audit")
    assert audit.field("retrieved_chunk_ids").type == pa.list_(
        pa.field("element", pa.string(), nullable=False))
    assert not audit.field("retrieved_chunk_ids").nullable
    assert audit.field("fetched_parts").nullable  # ["null", array]
    stage = audit.field("stage_latency_ms").type
    assert pa.types.is_map(stage) and stage.item_type == pa.float64()
    versions = audit.field("feature_versions")
    assert versions.nullable and versions.type.item_type == pa.int32()
    newest = audit.field("feature_newest_event_ms")
    assert newest.nullable and newest.type.item_field.nullable  # map of ["null", long]
    assert audit.field("features_as_of").type == pa.timestamp("ms", tz="UTC")
    assert audit.field("question").metadata[b"data_class"] == b"personal"
    outcome = arrow_schema("assistant_safety_outcome")
    assert outcome.field("outcome").type == pa.string()  # enum
    assert not outcome.field("categories").nullable


# --- the hourly DAG -------------------------------------------------------------------------


def test_audit_warehouse_dag_loads_both_streams_then_builds(tmp_path):
    from mercury.stack.airflow_standalone import airflow_env

    env = airflow_env(load_settings("local"), home=tmp_path / "airflow")
    env.pop("PATH")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.syspath_prepend(env["AIRFLOW__CORE__PLUGINS_FOLDER"])
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=REPO_ROOT / "dags" / "audit_warehouse.py")
    assert bag.import_errors == {}
    dag = bag.dags["audit_warehouse"]
    assert dag.schedule == timedelta(hours=1) and not dag.catchup
    assert dag.max_active_runs == 1
    assert dag.get_task("build").upstream_task_ids == {"load"}
    load = dag.get_task("load")
    assert load.is_mapped, "one load task per audit stream"
    assert [a.name for a in dag.get_task("build").outlets] == ["compliance_marts"]


# --- DuckDB over the lake -------------------------------------------------------------------


@pytest.fixture(scope="module")
def audit_warehouse(tmp_path_factory):
    """Two shipments loaded into the lake, then the compliance models built on DuckDB."""
    tmp = tmp_path_factory.mktemp("audit")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MERCURY_CONFIG", str(write_config(tmp)))
        # The DAG's glue module, imported as the DAG does (plugins/ on sys.path).
        patch.syspath_prepend(str(REPO_ROOT / "plugins"))
        glue = importlib.import_module("mercury_airflow.tasks.audit_warehouse")
        settings = load_settings()
        _ship(settings, "context_api_1", FIRST_AUDIT, FIRST_OUTCOMES,
              raw=[orjson.dumps(BROKEN_AUDIT)])
        first = {s: load_stream(settings, s) for s in glue.AUDIT_STREAMS}
        _ship(settings, "context_api_2", SECOND_AUDIT, SECOND_OUTCOMES)
        # The second load through the DAG's step, as the hourly run does it.
        second = {s: glue.load_audit_stream(settings, s, log=print) for s in glue.AUDIT_STREAMS}
        result = run_dbt(["build", "--select", COMPLIANCE_MODELS], settings=settings)
        yield {"settings": settings, "first": first, "second": second, "result": result}


@pytest.fixture
def warehouse(audit_warehouse):
    path = str(audit_warehouse["settings"].warehouse.duckdb_path)
    with duckdb.connect(path, read_only=True) as con:
        yield con


def test_load_stream_takes_both_audit_streams_into_the_lake(audit_warehouse):
    settings, first, second = (audit_warehouse[k] for k in ("settings", "first", "second"))
    audit = first["inference_audit"]
    assert (audit.read, audit.valid, audit.inserted) == (6, 5, 4)
    assert dict(audit.dead_letters) == {"missing_required_field": 1}
    assert (first["assistant_safety_outcomes"].valid,
            first["assistant_safety_outcomes"].inserted) == (4, 4)

    # The re-shipped req-1 and the retried report carry other event times than the first
    # copies, so the loader cannot see those: the lake holds both. Staging keeps one.
    assert second["inference_audit"]["inserted"] == 1
    assert second["assistant_safety_outcomes"]["inserted"] == 1
    lake = tables.read(settings, "inference_audit")
    ids = lake.column("request_id").to_pylist()
    assert sorted(ids) == ["req-1", "req-1", "req-2", "req-3", "req-4"]
    row = lake.filter(pa.compute.equal(lake["request_id"], "req-3")).to_pylist()[0]
    assert row["feature_versions"] is None and row["feature_newest_event_ms"] is None
    copies = lake.filter(pa.compute.equal(lake["request_id"], "req-1")).to_pylist()
    row = min(copies, key=lambda r: r["event_ts"])
    assert dict(row["feature_newest_event_ms"]) == {"declines": T0 - 4_000, "risk": None}
    assert dict(row["stage_latency_ms"])["documents"] == 21.5
    outcomes = tables.read(settings, "assistant_safety_outcomes")
    assert outcomes.column("outcome").to_pylist().count("BLOCKED") == 2


def test_dbt_builds_the_compliance_models(audit_warehouse):
    result = audit_warehouse["result"]
    assert result.success and not result.failed, result.summary()
    for model in ("stg_audit__inference_requests", "stg_audit__safety_outcomes",
                  "fct_inference_requests", "fct_inference_retrieved_chunks",
                  "fct_safety_outcomes", "compliance_assistant_context"):
        assert result.status_of(model) == "success", model
    unit_tests = [n for n in result.nodes if n.unique_id.startswith("unit_test.")]
    assert len(unit_tests) >= 5 and {n.status for n in unit_tests} == {"pass"}
    # req-9's outcome has no audit record: a warning (late data), not a failure.
    late = [n for n in result.nodes if n.name.startswith("relationships_fct_safety_outcomes")]
    assert [n.status for n in late] == ["warn"]


def test_one_row_per_request_earliest_copy_wins(warehouse):
    rows = _rows(warehouse, "select request_id, event_ts, served_from, is_degraded, "
                            "retrieved_chunk_count, feature_versions, features_as_of "
                            "from analytics_compliance.fct_inference_requests order by 1")
    assert [r["request_id"] for r in rows] == ["req-1", "req-2", "req-3", "req-4"]
    by_id = {r["request_id"]: r for r in rows}
    assert by_id["req-1"]["event_ts"] == _ts(T0)
    assert by_id["req-1"]["served_from"] == "context-api-7f9c:1"  # not the re-shipped copy
    assert [by_id[i]["is_degraded"] for i in sorted(by_id)] == [False, False, False, True]
    assert [by_id[i]["retrieved_chunk_count"] for i in sorted(by_id)] == [3, 0, 1, 0]
    assert by_id["req-3"]["feature_versions"] is None
    assert by_id["req-2"]["feature_versions"] == {"spending": 5, "purchases": 2}
    assert by_id["req-4"]["features_as_of"] == _ts(T0 + DAY_MS)


def test_retrieved_chunks_have_ranks_doc_ids_and_scores(warehouse):
    rows = _rows(warehouse, "select request_id, chunk_rank, doc_id, chunk_position, chunk_hash, "
                            "retrieval_score from analytics_compliance"
                            ".fct_inference_retrieved_chunks order by request_id, chunk_rank")
    assert [(r["request_id"], r["chunk_rank"], r["doc_id"], r["chunk_position"],
             r["chunk_hash"]) for r in rows] == [
        ("req-1", 1, "policy-7", 3, "ab12"),
        ("req-1", 2, "policy-7", 4, "cd34"),
        ("req-1", 3, "help:fr:refunds", 0, "ef56"),
        ("req-3", 1, "help-returns", 0, "aa11"),
    ]
    assert [r["retrieval_score"] for r in rows] == [0.92, 0.81, 0.64, 0.77]


def test_safety_outcomes_one_per_request_joined(warehouse):
    rows = {r["request_id"]: r for r in _rows(
        warehouse, "select * from analytics_compliance.fct_safety_outcomes")}
    assert set(rows) == {"req-1", "req-2", "req-4", "req-9"}
    assert rows["req-1"]["decided_at"] == _ts(T0 + 900)  # the retried report did not win
    assert rows["req-1"]["reported_by"] == "llm-serving"
    assert rows["req-1"]["user_token"] == USER_A and rows["req-1"]["intent"] == "why_declined"
    assert rows["req-4"]["category_count"] == 2 and rows["req-4"]["is_degraded"] is True
    assert rows["req-9"]["has_audit_record"] is False and rows["req-9"]["user_token"] is None


def test_compliance_view_masks_personal_columns_unless_the_role_is_set(warehouse):
    query = ("select request_id, question_redacted, question_ciphertext, served_features_json "
             "from analytics_compliance.compliance_assistant_context order by request_id")
    masked = _rows(warehouse, query)
    assert [r["question_redacted"] for r in masked] == [MASKED] * 4
    assert [r["served_features_json"] for r in masked] == [MASKED, MASKED, None, MASKED]

    warehouse.execute("set variable mercury_role = 'analyst'")
    assert {r["question_redacted"] for r in _rows(warehouse, query)} == {MASKED}

    warehouse.execute("set variable mercury_role = 'compliance_investigator'")
    seen = {r["request_id"]: r for r in _rows(warehouse, query)}
    assert seen["req-2"]["question_redacted"] == "summarize my spending this week"
    assert seen["req-1"]["question_ciphertext"].startswith("enc1:")
    assert orjson.loads(seen["req-1"]["served_features_json"])["declines"] == {"count_24h": 2}
    # The raw values reach no table but the copy of the lake table; the models that carry
    # personal columns are views, where the check runs per query.
    carriers = {(r["table_name"], r["table_type"]) for r in _rows(warehouse, """
        select c.table_name, t.table_type from information_schema.columns c
        join information_schema.tables t using (table_catalog, table_schema, table_name)
        where c.column_name in ('question', 'question_redacted', 'question_ciphertext',
                                'served_features_json')""")}
    assert carriers == {("inference_requests", "BASE TABLE"),
                        ("stg_audit__inference_requests", "VIEW"),
                        ("compliance_assistant_context", "VIEW")}

    warehouse.execute("reset variable mercury_role")
    assert {r["question_redacted"] for r in _rows(warehouse, query)} == {MASKED}


def test_what_the_assistant_saw_for_user_on_date(warehouse):
    """The example question of docs/COMPLIANCE.md: user X (as a token), day Z."""
    warehouse.execute("set variable mercury_role = 'compliance_investigator'")
    rows = _rows(warehouse, """
        select request_id, event_ts, intent, question_redacted, retrieved_doc_ids,
               feature_versions, features_as_of, served_features_json, llm_model_version,
               index_version, degraded_parts, safety_outcome, safety_categories
        from analytics_compliance.compliance_assistant_context
        where user_token = ? and event_date = ?
        order by event_ts""", [USER_A, date(2024, 3, 5)])
    assert [r["request_id"] for r in rows] == ["req-1", "req-2"]
    first, second = rows
    assert first["retrieved_doc_ids"] == "policy-7, policy-7, help:fr:refunds"
    assert orjson.loads(first["feature_versions"]) == {"declines": 3, "risk": 1}
    assert first["safety_outcome"] == "BLOCKED"
    assert orjson.loads(first["safety_categories"]) == ["pii_leak"]
    assert first["question_redacted"] == "why was my card declined at ####?"
    assert second["retrieved_doc_ids"] is None and second["safety_outcome"] == "ALLOWED"

    rows = _rows(warehouse, """
        select request_id, feature_versions, degraded_parts, safety_outcome
        from analytics_compliance.compliance_assistant_context
        where user_token = ? order by event_ts""", [USER_B])
    assert [(r["request_id"], r["safety_outcome"]) for r in rows] == [
        ("req-3", "NOT_REPORTED"), ("req-4", "MODIFIED")]
    assert rows[0]["feature_versions"] is None
    assert orjson.loads(rows[1]["degraded_parts"]) == ["features.risk:snapshot",
                                                       "documents:unavailable"]
    warehouse.execute("reset variable mercury_role")


# --- Snowflake's dialect on fakesnow --------------------------------------------------------


def _snowflake_ddl(table: str, subject: str) -> str:
    return snowflake_source_ddl(table, subject, not_null=False)


def test_compliance_models_build_on_snowflake_dialect_via_fakesnow(fakesnow_server,
                                                                    tmp_settings):
    db = fakesnow_server.database
    with fakesnow_server.connect() as con:
        cur = con.cursor()
        cur.execute(f"create database if not exists {db}")
        cur.execute(f"create schema if not exists {db}.audit")
        cur.execute(_snowflake_ddl(f"{db}.audit.inference_requests", "inference_audit"))
        cur.execute(_snowflake_ddl(f"{db}.audit.safety_outcomes", "assistant_safety_outcome"))
        audit_columns = ("request_id, event_ts, caller, user_token, question, intent, "
                         "retrieved_chunk_ids, retrieved_chunk_scores, feature_versions, "
                         "features_as_of, stage_latency_ms, total_latency_ms, degraded_parts, "
                         "question_redacted, served_features_json, llm_model_version")
        cur.execute(
            f"insert into {db}.audit.inference_requests ({audit_columns}) "
            "select 'r1', '2024-03-05 13:00:00+01:00'::timestamp_tz, 'bff', 'ut_a', 'enc1:k:x', "
            "'why_declined', array_construct('policy-7:3:ab12', 'help:fr:refunds:0:ef56'), "
            "array_construct(0.9, 0.7), object_construct('declines', 3), "
            "'2024-03-05 12:00:00+00:00'::timestamp_tz, object_construct('features', 4.5), "
            "27.5, array_construct(), 'why declined', '{\"declines\":{}}', 'llm-1' "
            "union all "
            "select 'r1', '2024-03-05 15:00:00+00:00'::timestamp_tz, 'bff', 'ut_a', "
            "'enc1:k:x', 'why_declined', array_construct('policy-7:3:ab12'), "
            "array_construct(0.9), null, null, object_construct(), 1.0, array_construct(), "
            "'why declined', null, 'llm-1' "
            "union all "
            "select 'r2', '2024-03-05 12:05:00+00:00'::timestamp_tz, 'bff', 'ut_b', "
            "'enc1:k:y', 'general', array_construct(), null, null, null, "
            "object_construct(), 3.0, array_construct('features.risk:snapshot'), null, null, "
            "'llm-1'")
        cur.execute(
            f"insert into {db}.audit.safety_outcomes (request_id, event_ts, caller, outcome, "
            "categories) "
            "select 'r1', '2024-03-05 12:00:01+00:00'::timestamp_tz, 'llm', 'BLOCKED', "
            "array_construct('pii_leak') "
            "union all select 'r1', '2024-03-05 12:30:00+00:00'::timestamp_tz, 'llm-retry', "
            "'BLOCKED', array_construct('pii_leak')")

    # Unit tests need database-qualified temporary tables, which fakesnow cannot make; they
    # run on DuckDB above.
    result = run_dbt(["build", "--select", COMPLIANCE_MODELS, "--exclude-resource-type",
                      "unit_test"], target="snowflake", env_extra=fakesnow_server.dbt_env,
                     settings=tmp_settings)
    assert result.success and not result.failed, result.summary()
    assert result.status_of("compliance_assistant_context") == "success"

    with fakesnow_server.connect() as con:
        cur = con.cursor()
        cur.execute(f"select request_id, event_ts, retrieved_doc_ids, safety_outcome, "
                    f"question_redacted, served_features_json, is_degraded "
                    f"from {db}.analytics_compliance.compliance_assistant_context "
                    f"order by request_id")
        context = cur.fetchall()
        cur.execute(f"select request_id, chunk_rank, doc_id, chunk_position "
                    f"from {db}.analytics_compliance.fct_inference_retrieved_chunks "
                    f"order by request_id, chunk_rank")
        chunks = cur.fetchall()
    # fakesnow's session is no investigator: masked.
    assert context == [
        ("r1", datetime(2024, 3, 5, 12, 0), "policy-7, help:fr:refunds", "BLOCKED", MASKED,
         MASKED, False),
        ("r2", datetime(2024, 3, 5, 12, 5), None, "NOT_REPORTED", None, None, True),
    ]
    assert chunks == [("r1", 1, "policy-7", 3), ("r1", 2, "help:fr:refunds", 0)]

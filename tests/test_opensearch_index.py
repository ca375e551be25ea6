"""OpenSearch cannot run here: request-level tests of ``OpenSearchVectorIndex``.

The adapter is built with an injected connection class: opensearch-py's own
``Urllib3HttpConnection`` with only ``perform_request`` replaced. So everything above the
socket is the real client (API methods, paths, query parameters, JSON and NDJSON
serialisation, status-to-exception mapping, basic auth headers, TLS pool set-up), and each
request is recorded exactly as it would go on the wire: method, path, query parameters and
the body bytes (parsed here for comparison). Responses are canned from the examples in the
OpenSearch documentation (create index, bulk with and without item errors, delete by query,
multi-get, k-NN search, aliases, composite aggregation, error bodies).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from opensearchpy import Urllib3HttpConnection
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError

from mercury.config import OpenSearchVectorConfig, RetrievalConfig
from mercury.retrieval import opensearch_index
from mercury.retrieval.factory import open_index
from mercury.retrieval.index import (
    ChunkRow,
    DocumentWrite,
    LedgerEntry,
    SearchFilter,
    VectorIndexError,
    VersionSpec,
)
from mercury.retrieval.opensearch_index import (
    REGISTRY,
    OpenSearchVectorIndex,
    cosine_from_score,
    stale_chunks_query,
)

NAME = "knowledge-hashing-384-sections-t200-o32-20261121t101500"
LEDGER = f"{NAME}-ledger"
OLD = "knowledge-hashing-384-sections-t200-o32-20261101t090000"
SPEC = VersionSpec(name=NAME, alias="knowledge", embedding_model="hashing-384",
                   embedding_version="v1", chunking="sections-t200-o32", dimension=4,
                   created_at_ms=1_795_255_300_000)
# Values apart from the config defaults, so a body built from defaults would not pass.
CONFIG = OpenSearchVectorConfig(hosts=["https://search.example:443"], shards=2, replicas=1,
                                hnsw_m=24, hnsw_ef_construction=200, hnsw_ef_search=100)

ACK = {"acknowledged": True}
CREATED_INDEX = {"acknowledged": True, "shards_acknowledged": True, "index": NAME}
DELETED_BY_QUERY = {"took": 143, "timed_out": False, "total": 1, "deleted": 1, "batches": 1,
                    "version_conflicts": 0, "noops": 0, "retries": {"bulk": 0, "search": 0},
                    "throttled_millis": 0, "requests_per_second": -1.0,
                    "throttled_until_millis": 0, "failures": []}
SHARDS = {"total": 2, "successful": 2, "skipped": 0, "failed": 0}


def error(status: int, kind: str, reason: str) -> tuple[int, dict]:
    return status, {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind,
                              "reason": reason}, "status": status}


def bulk_ok(ids: list[str]) -> dict:
    return {"took": 35, "errors": False, "items": [
        {"index": {"_index": NAME, "_id": i, "_version": 1, "result": "created",
                   "_shards": {"total": 2, "successful": 2, "failed": 0}, "_seq_no": n,
                   "_primary_term": 1, "status": 201}} for n, i in enumerate(ids)]}


def stored(doc: str, seq_no: int, source: dict) -> dict:
    return {"_index": REGISTRY, "_id": doc, "_version": 3, "_seq_no": seq_no,
            "_primary_term": 2, "found": True, "_source": source}


# ---- the fake cluster ----------------------------------------------------------------------

@dataclass
class Request:
    method: str
    path: str
    params: dict
    body: Any  # parsed JSON; for _bulk and _msearch the list of NDJSON lines
    raw: bytes | None


class FakeCluster:
    """Records requests; answers each (method, path) from a queue of canned responses (the
    last one repeats). A request nobody expected fails the test."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.routes: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.connections: list[Urllib3HttpConnection] = []

    def on(self, method: str, path: str, *responses: tuple[int, Any]) -> None:
        self.routes.setdefault((method, path), []).extend(responses)

    def answer(self, method: str, path: str, params: dict | None, raw: bytes | None):
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text is None:
            body = None
        elif path.endswith(("/_bulk", "/_msearch")):
            body = [json.loads(line) for line in text.splitlines()]
        else:
            body = json.loads(text)
        # The client encodes query values (b"wait_for"); the URL carries them as text.
        query = {k: v.decode() if isinstance(v, bytes) else str(v)
                 for k, v in (params or {}).items()}
        self.requests.append(Request(method, path, query, body, raw))
        queue = self.routes.get((method, path))
        if not queue:
            raise AssertionError(f"unexpected request {method} {path}")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def one(self, method: str, path: str) -> Request:
        (request,) = self.sent(method, path)
        return request

    def connection_class(self) -> type:
        cluster = self

        class RecordingConnection(Urllib3HttpConnection):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                cluster.connections.append(self)

            def perform_request(self, method, url, params=None, body=None, timeout=None,
                                ignore=(), headers=None):
                status, payload = cluster.answer(method, url, params, body)
                raw = "" if payload is None else json.dumps(payload)
                if not 200 <= status < 300 and status not in ignore:
                    self._raise_error(status, raw, "application/json")
                return status, {"content-type": "application/json"}, raw

        return RecordingConnection


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def index(cluster: FakeCluster) -> OpenSearchVectorIndex:
    return OpenSearchVectorIndex(CONFIG, connection_class=cluster.connection_class())


def row(doc_id: str, position: int, vector: list[float], **fields) -> ChunkRow:
    values = dict(chunk_id=f"{doc_id}#{position}", doc_id=doc_id, position=position,
                  doc_type="faq", language="fr", merchant_id=None, title="Remboursements",
                  heading="Délais", source_url="https://help.example/r", text=f"passage {position}",
                  updated_at=1_795_000_000_000, vector=np.array(vector, dtype=np.float32))
    return ChunkRow(**{**values, **fields})


# ---- versions ------------------------------------------------------------------------------

def expect_create_version(cluster: FakeCluster) -> None:
    cluster.on("PUT", f"/{REGISTRY}", (200, {**CREATED_INDEX, "index": REGISTRY}))
    cluster.on("PUT", f"/{NAME}", (200, CREATED_INDEX))
    cluster.on("PUT", f"/{LEDGER}", (200, {**CREATED_INDEX, "index": LEDGER}))
    cluster.on("PUT", f"/{REGISTRY}/_create/version.{NAME}",
               (201, {"_index": REGISTRY, "_id": f"version.{NAME}", "_version": 1,
                      "result": "created", "_seq_no": 0, "_primary_term": 1}))


def test_create_version_sends_the_knn_mapping_then_records_the_version(index, cluster):
    expect_create_version(cluster)
    index.create_version(SPEC)

    assert cluster.calls() == [("PUT", f"/{REGISTRY}"), ("PUT", f"/{NAME}"),
                               ("PUT", f"/{LEDGER}"),
                               ("PUT", f"/{REGISTRY}/_create/version.{NAME}")]
    body = cluster.one("PUT", f"/{NAME}").body
    assert body["settings"] == {"index": {"number_of_shards": 2, "number_of_replicas": 1,
                                          "refresh_interval": "1s", "knn": True,
                                          "knn.algo_param.ef_search": 100}}
    mappings = body["mappings"]
    assert mappings["properties"]["vector"] == {
        "type": "knn_vector", "dimension": 4,
        "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil",
                   "parameters": {"m": 24, "ef_construction": 200}}}
    assert mappings["dynamic"] == "strict"
    assert mappings["_meta"] == {"version_spec": {
        "name": NAME, "alias": "knowledge", "embedding_model": "hashing-384",
        "embedding_version": "v1", "chunking": "sections-t200-o32", "dimension": 4,
        "created_at_ms": 1_795_255_300_000}}
    props = mappings["properties"]
    for field in ("chunk_id", "doc_id", "doc_type", "language", "merchant_id"):
        assert props[field] == {"type": "keyword"}
    for field in ("title", "heading", "text"):
        assert props[field] == {"type": "text", "index": False}
    # Full text: one field per language, with that language's built-in analyzer.
    assert {f: props[f] for f in props if f.startswith("lexical_")} == {
        "lexical_en": {"type": "text", "analyzer": "english"},
        "lexical_fr": {"type": "text", "analyzer": "french"},
        "lexical_de": {"type": "text", "analyzer": "german"},
        "lexical_es": {"type": "text", "analyzer": "spanish"}}
    assert props["position"] == {"type": "integer"}
    assert props["updated_at"] == {"type": "date", "format": "epoch_millis"}

    ledger = cluster.one("PUT", f"/{LEDGER}").body
    assert "knn" not in ledger["settings"]["index"]
    assert set(ledger["mappings"]["properties"]) == {"doc_id", "order_key", "deleted",
                                                     "chunk_ids"}
    record = cluster.one("PUT", f"/{REGISTRY}/_create/version.{NAME}")
    assert record.params == {"refresh": "wait_for"}
    assert record.body == {"kind": "version", "name": NAME, "alias": "knowledge",
                           "embedding_model": "hashing-384", "embedding_version": "v1",
                           "chunking": "sections-t200-o32", "dimension": 4,
                           "created_at_ms": 1_795_255_300_000, "state": "building"}


def test_create_version_again_does_nothing(index, cluster):
    exists = error(400, "resource_already_exists_exception", "index already exists")
    for path in (f"/{REGISTRY}", f"/{NAME}", f"/{LEDGER}"):
        cluster.on("PUT", path, exists)
    cluster.on("PUT", f"/{REGISTRY}/_create/version.{NAME}",
               error(409, "version_conflict_engine_exception", "document already exists"))
    index.create_version(SPEC)  # no error, and the recorded state is left alone


def test_create_version_with_a_bad_mapping_names_the_index(index, cluster):
    cluster.on("PUT", f"/{REGISTRY}", (200, CREATED_INDEX))
    cluster.on("PUT", f"/{NAME}", error(400, "mapper_parsing_exception", "bad dimension"))
    with pytest.raises(VectorIndexError, match=f"create index on '{NAME}'.*mapper_parsing"):
        index.create_version(SPEC)


def test_versions_are_read_from_the_registry(index, cluster):
    source = {"kind": "version", "name": NAME, "alias": "knowledge",
              "embedding_model": "hashing-384", "embedding_version": "v1",
              "chunking": "sections-t200-o32", "dimension": 4,
              "created_at_ms": 1_795_255_300_000, "state": "ready"}
    cluster.on("POST", f"/{REGISTRY}/_search", (200, {
        "took": 2, "timed_out": False, "_shards": SHARDS,
        "hits": {"total": {"value": 1, "relation": "eq"}, "max_score": None,
                 "hits": [{"_index": REGISTRY, "_id": f"version.{NAME}", "_score": None,
                           "_source": source, "sort": [1_795_255_300_000, NAME]}]}}))
    assert index.versions("knowledge") == [VersionSpec(**{
        k: v for k, v in source.items() if k != "kind"})]
    query = cluster.one("POST", f"/{REGISTRY}/_search").body["query"]
    assert query == {"bool": {"filter": [{"term": {"kind": "version"}},
                                         {"term": {"alias": "knowledge"}}]}}


def test_no_registry_means_no_versions(index, cluster):
    cluster.on("POST", f"/{REGISTRY}/_search",
               error(404, "index_not_found_exception", f"no such index [{REGISTRY}]"))
    assert index.versions("knowledge") == []


def test_set_state_updates_the_record(index, cluster):
    cluster.on("POST", f"/{REGISTRY}/_update/version.{NAME}", (200, {"result": "updated"}))
    index.set_state(NAME, "ready")
    update = cluster.one("POST", f"/{REGISTRY}/_update/version.{NAME}")
    assert update.body == {"doc": {"state": "ready"}}
    assert update.params == {"refresh": "wait_for"}
    with pytest.raises(VectorIndexError, match="unknown version state"):
        index.set_state(NAME, "live")


def test_drop_version_refuses_the_served_version(index, cluster):
    cluster.on("GET", f"/{NAME}/_alias", (200, {NAME: {"aliases": {"knowledge": {}}}}))
    with pytest.raises(VectorIndexError, match="served by alias knowledge"):
        index.drop_version(NAME)
    assert [m for m, _ in cluster.calls()] == ["GET"]  # nothing deleted


def test_drop_version_deletes_both_indexes_and_the_record(index, cluster):
    cluster.on("GET", f"/{OLD}/_alias", (200, {OLD: {"aliases": {}}}))
    cluster.on("DELETE", f"/{OLD}", (200, ACK))
    cluster.on("DELETE", f"/{OLD}-ledger", error(404, "index_not_found_exception", "gone"))
    cluster.on("DELETE", f"/{REGISTRY}/_doc/version.{OLD}", (200, {"result": "deleted"}))
    index.drop_version(OLD)
    assert cluster.calls()[1:] == [("DELETE", f"/{OLD}"), ("DELETE", f"/{OLD}-ledger"),
                                   ("DELETE", f"/{REGISTRY}/_doc/version.{OLD}")]


# ---- aliases -------------------------------------------------------------------------------

def expect_alias_state(cluster: FakeCluster, history: list[str] | None, target: str | None):
    cluster.on("PUT", f"/{REGISTRY}",
               error(400, "resource_already_exists_exception", "exists"))
    if history is None:
        cluster.on("GET", f"/{REGISTRY}/_doc/alias.knowledge",
                   (404, {"_index": REGISTRY, "_id": "alias.knowledge", "found": False}))
    else:
        cluster.on("GET", f"/{REGISTRY}/_doc/alias.knowledge", (200, stored(
            "alias.knowledge", 7, {"kind": "alias", "alias": "knowledge",
                                   "history": history})))
    if target is None:
        cluster.on("GET", "/_alias/knowledge", error(404, "aliases_not_found_exception",
                                                     "alias [knowledge] missing"))
    else:
        cluster.on("GET", "/_alias/knowledge", (200, {target: {"aliases": {"knowledge": {}}}}))


def test_swap_moves_the_alias_in_one_atomic_request_then_records_it(index, cluster):
    expect_alias_state(cluster, history=[OLD], target=OLD)
    cluster.on("POST", "/_aliases", (200, ACK))
    cluster.on("PUT", f"/{REGISTRY}/_doc/alias.knowledge", (200, {"result": "updated"}))

    assert index.swap_alias("knowledge", NAME) == OLD

    (move,) = cluster.sent("POST", "/_aliases")
    assert move.body == {"actions": [{"remove": {"index": OLD, "alias": "knowledge"}},
                                     {"add": {"index": NAME, "alias": "knowledge"}}]}
    record = cluster.one("PUT", f"/{REGISTRY}/_doc/alias.knowledge")
    assert record.params == {"if_seq_no": "7", "if_primary_term": "2", "refresh": "wait_for"}
    assert record.body == {"kind": "alias", "alias": "knowledge", "history": [OLD, NAME]}
    assert cluster.calls().index(("POST", "/_aliases")) < cluster.calls().index(
        ("PUT", f"/{REGISTRY}/_doc/alias.knowledge"))


def test_first_swap_adds_the_alias_and_creates_its_history(index, cluster):
    expect_alias_state(cluster, history=None, target=None)
    cluster.on("POST", "/_aliases", (200, ACK))
    cluster.on("PUT", f"/{REGISTRY}/_create/alias.knowledge", (201, {"result": "created"}))

    assert index.swap_alias("knowledge", NAME) is None
    assert cluster.one("POST", "/_aliases").body == {
        "actions": [{"add": {"index": NAME, "alias": "knowledge"}}]}
    assert cluster.one("PUT", f"/{REGISTRY}/_create/alias.knowledge").body["history"] == [NAME]


def test_swap_that_lost_the_alias_to_another_process_changes_nothing(index, cluster):
    expect_alias_state(cluster, history=[OLD], target=OLD)
    cluster.on("POST", "/_aliases", error(404, "aliases_not_found_exception",
                                          "aliases [knowledge] missing"))
    with pytest.raises(VectorIndexError, match="another process moved it"):
        index.swap_alias("knowledge", NAME)
    assert not cluster.sent("PUT", f"/{REGISTRY}/_doc/alias.knowledge")


def test_swap_whose_record_lost_a_race_is_undone(index, cluster):
    expect_alias_state(cluster, history=[OLD], target=OLD)
    cluster.on("POST", "/_aliases", (200, ACK))
    cluster.on("PUT", f"/{REGISTRY}/_doc/alias.knowledge",
               error(409, "version_conflict_engine_exception", "seq_no conflict"))
    with pytest.raises(VectorIndexError, match="changed by another process"):
        index.swap_alias("knowledge", NAME)
    undo = cluster.sent("POST", "/_aliases")[1]
    assert undo.body == {"actions": [{"remove": {"index": NAME, "alias": "knowledge"}},
                                     {"add": {"index": OLD, "alias": "knowledge"}}]}


def test_rollback_moves_back_in_one_atomic_request(index, cluster):
    expect_alias_state(cluster, history=[OLD, NAME], target=NAME)
    cluster.on("GET", f"/{REGISTRY}/_doc/version.{OLD}", (200, stored(
        f"version.{OLD}", 3, {"kind": "version", "name": OLD, "state": "ready"})))
    cluster.on("POST", "/_aliases", (200, ACK))
    cluster.on("PUT", f"/{REGISTRY}/_doc/alias.knowledge", (200, {"result": "updated"}))

    assert index.rollback_alias("knowledge") == OLD

    (move,) = cluster.sent("POST", "/_aliases")
    assert move.body == {"actions": [{"remove": {"index": NAME, "alias": "knowledge"}},
                                     {"add": {"index": OLD, "alias": "knowledge"}}]}
    record = cluster.one("PUT", f"/{REGISTRY}/_doc/alias.knowledge")
    assert record.body["history"] == [OLD, NAME, OLD]  # a second rollback returns to NAME


def test_rollback_after_a_lost_record_uses_where_the_alias_really_is(index, cluster):
    # The process died after moving the alias to NAME and before recording it.
    expect_alias_state(cluster, history=[OLD], target=NAME)
    cluster.on("GET", f"/{REGISTRY}/_doc/version.{OLD}", (200, stored(
        f"version.{OLD}", 3, {"kind": "version", "name": OLD, "state": "ready"})))
    cluster.on("POST", "/_aliases", (200, ACK))
    cluster.on("PUT", f"/{REGISTRY}/_doc/alias.knowledge", (200, {"result": "updated"}))
    assert index.rollback_alias("knowledge") == OLD
    assert cluster.one("PUT", f"/{REGISTRY}/_doc/alias.knowledge").body["history"] == [
        OLD, NAME, OLD]


@pytest.mark.parametrize("record, why", [
    ((200, stored(f"version.{OLD}", 3, {"kind": "version", "name": OLD, "state": "retired"})),
     "retired"),
    ((404, {"_index": REGISTRY, "_id": f"version.{OLD}", "found": False}), "dropped"),
])
def test_rollback_refuses_a_version_no_longer_maintained(index, cluster, record, why):
    expect_alias_state(cluster, history=[OLD, NAME], target=NAME)
    cluster.on("GET", f"/{REGISTRY}/_doc/version.{OLD}", record)
    with pytest.raises(VectorIndexError, match=why):
        index.rollback_alias("knowledge")
    assert not cluster.sent("POST", "/_aliases")


def test_rollback_without_an_earlier_version_refuses(index, cluster):
    expect_alias_state(cluster, history=[NAME], target=NAME)
    with pytest.raises(VectorIndexError, match="no earlier version"):
        index.rollback_alias("knowledge")


def test_alias_target_reads_the_cluster(index, cluster):
    cluster.on("GET", "/_alias/knowledge", (200, {NAME: {"aliases": {"knowledge": {}}}}))
    assert index.alias_target("knowledge") == NAME


# ---- writes --------------------------------------------------------------------------------

REPLACED = DocumentWrite(LedgerEntry("d1", (1_795_000_000_000, 0, "chg-9"), False,
                                     ("d1#0", "d1#1")),
                         [row("d1", 0, [0.1, 0.2, 0.3, 0.4]),
                          row("d1", 1, [1.0, 0.0, -0.5, 0.25], merchant_id="m-42")])
DELETED = DocumentWrite(LedgerEntry("d2", (1_795_000_000_500, 1, "chg-10"), True, ()))


def mapping(lexical: bool = True) -> dict:
    """GET <version>,<ledger>/_mapping as the cluster answers it (lexical: a version created
    with the full-text fields; False: one created before hybrid search)."""
    chunks = opensearch_index.chunk_index_body(SPEC, CONFIG)["mappings"]
    if not lexical:
        chunks = {**chunks, "properties": {f: v for f, v in chunks["properties"].items()
                                           if not f.startswith("lexical_")}}
    return {NAME: {"mappings": chunks},
            LEDGER: {"mappings": opensearch_index.ledger_index_body(CONFIG)["mappings"]}}


def expect_write(cluster: FakeCluster, lexical: bool = True) -> None:
    cluster.on("GET", f"/{NAME},{LEDGER}/_mapping", (200, mapping(lexical)))
    cluster.on("POST", f"/{NAME}/_bulk", (200, bulk_ok(["d1#0", "d1#1"])))
    cluster.on("POST", f"/{NAME}/_delete_by_query", (200, DELETED_BY_QUERY))
    cluster.on("POST", f"/{LEDGER}/_bulk", (200, bulk_ok(["d1", "d2"])))


def test_write_sends_chunks_then_removes_stale_ones_then_the_ledger(index, cluster):
    expect_write(cluster)
    index.write(NAME, [REPLACED, DELETED])

    assert cluster.calls() == [("GET", f"/{NAME},{LEDGER}/_mapping"),
                               ("POST", f"/{NAME}/_bulk"),
                               ("POST", f"/{NAME}/_delete_by_query"),
                               ("POST", f"/{LEDGER}/_bulk")]
    chunks = cluster.one("POST", f"/{NAME}/_bulk")
    assert chunks.params == {"refresh": "wait_for"}
    assert chunks.raw.endswith(b"\n")  # NDJSON: every line, the last too, ends with \n
    common = {"doc_id": "d1", "doc_type": "faq", "language": "fr", "title": "Remboursements",
              "heading": "Délais", "source_url": "https://help.example/r",
              "updated_at": 1_795_000_000_000}
    assert chunks.body == [
        {"index": {"_id": "d1#0"}},
        {"chunk_id": "d1#0", "position": 0, "merchant_id": None, "text": "passage 0",
         "vector": [0.1, 0.2, 0.3, 0.4], "lexical_fr": "Remboursements\nDélais\npassage 0",
         **common},
        {"index": {"_id": "d1#1"}},
        {"chunk_id": "d1#1", "position": 1, "merchant_id": "m-42", "text": "passage 1",
         "vector": [1.0, 0.0, -0.5, 0.25], "lexical_fr": "Remboursements\nDélais\npassage 1",
         **common},
    ]

    removal = cluster.one("POST", f"/{NAME}/_delete_by_query")
    assert removal.params == {"refresh": "true"}
    assert removal.body == {"query": {"bool": {"minimum_should_match": 1, "should": [
        {"bool": {"filter": [{"term": {"doc_id": "d1"}}],
                  "must_not": [{"ids": {"values": ["d1#0", "d1#1"]}}]}},
        {"bool": {"filter": [{"term": {"doc_id": "d2"}}]}},
    ]}}}

    ledger = cluster.one("POST", f"/{LEDGER}/_bulk")
    assert ledger.body == [
        {"index": {"_id": "d1"}},
        {"doc_id": "d1", "order_key": '[1795000000000, 0, "chg-9"]', "deleted": False,
         "chunk_ids": ["d1#0", "d1#1"]},
        {"index": {"_id": "d2"}},
        {"doc_id": "d2", "order_key": '[1795000000500, 1, "chg-10"]', "deleted": True,
         "chunk_ids": []},
    ]


def test_stale_chunks_of_a_replaced_doc_are_its_chunks_not_in_the_new_rows():
    assert stale_chunks_query([REPLACED]) == {"query": {"bool": {"minimum_should_match": 1,
        "should": [{"bool": {"filter": [{"term": {"doc_id": "d1"}}],
                             "must_not": [{"ids": {"values": ["d1#0", "d1#1"]}}]}}]}}}


def test_stale_chunks_of_a_deleted_doc_are_all_its_chunks():
    assert stale_chunks_query([DELETED]) == {"query": {"bool": {"minimum_should_match": 1,
        "should": [{"bool": {"filter": [{"term": {"doc_id": "d2"}}]}}]}}}


def test_a_write_of_deletes_only_sends_no_chunk_bulk(index, cluster):
    expect_write(cluster)
    index.write(NAME, [DELETED])
    assert ("POST", f"/{NAME}/_bulk") not in cluster.calls()
    assert cluster.calls()[-1] == ("POST", f"/{LEDGER}/_bulk")


def test_bulk_item_errors_raise_naming_the_failed_chunk_and_write_no_ledger(index, cluster):
    expect_write(cluster)
    response = bulk_ok(["d1#0", "d1#1"])
    response["errors"] = True
    response["items"][1] = {"index": {"_index": NAME, "_id": "d1#1", "status": 400, "error": {
        "type": "mapper_parsing_exception", "reason": "Vector dimension mismatch"}}}
    cluster.routes[("POST", f"/{NAME}/_bulk")] = [(200, response)]

    with pytest.raises(VectorIndexError) as raised:
        index.write(NAME, [REPLACED])
    assert "d1#1" in str(raised.value) and "d1#0" not in str(raised.value)
    assert "mapper_parsing_exception" in str(raised.value)
    # The ledger is the commit mark: a failed write leaves it as it was, so a replay redoes it.
    assert ("POST", f"/{LEDGER}/_bulk") not in cluster.calls()


def test_a_ledger_bulk_error_raises_naming_the_doc(index, cluster):
    expect_write(cluster)
    cluster.routes[("POST", f"/{LEDGER}/_bulk")] = [(200, {"took": 9, "errors": True, "items": [
        {"index": {"_index": LEDGER, "_id": "d2", "status": 429, "error": {
            "type": "es_rejected_execution_exception", "reason": "queue full"}}}]})]
    with pytest.raises(VectorIndexError, match="write ledger.*d2"):
        index.write(NAME, [DELETED])


def test_a_failed_delete_by_query_raises(index, cluster):
    expect_write(cluster)
    cluster.routes[("POST", f"/{NAME}/_delete_by_query")] = [(200, {
        **DELETED_BY_QUERY, "failures": [{"index": NAME, "id": "d1#7", "status": 409}]})]
    with pytest.raises(VectorIndexError, match="remove replaced chunks"):
        index.write(NAME, [REPLACED])
    assert ("POST", f"/{LEDGER}/_bulk") not in cluster.calls()


def test_a_write_to_a_missing_version_is_refused_before_bulk_could_auto_create_it(index,
                                                                                  cluster):
    cluster.on("GET", f"/{NAME},{LEDGER}/_mapping",
               error(404, "index_not_found_exception", f"no such index [{LEDGER}]"))
    with pytest.raises(VectorIndexError, match="create_version first"):
        index.write(NAME, [REPLACED])
    assert cluster.calls() == [("GET", f"/{NAME},{LEDGER}/_mapping")]


def test_a_version_created_before_hybrid_search_gets_no_full_text_fields(index, cluster):
    """Its strict mapping has no lexical_* fields and would refuse them: the mapping, read
    once per version, decides."""
    expect_write(cluster, lexical=False)
    index.write(NAME, [REPLACED])
    index.write(NAME, [REPLACED])
    sources = [line for line in cluster.sent("POST", f"/{NAME}/_bulk")[-1].body
               if "chunk_id" in line]
    assert len(sources) == 2 and not [f for s in sources for f in s if f.startswith("lexical")]
    assert cluster.calls().count(("GET", f"/{NAME},{LEDGER}/_mapping")) == 1


def test_zero_vectors_are_refused(index, cluster):
    cluster.on("GET", f"/{NAME},{LEDGER}/_mapping", (200, mapping()))
    zero = DocumentWrite(REPLACED.entry, [row("d1", 0, [0.0, 0.0, 0.0, 0.0])])
    with pytest.raises(VectorIndexError, match="d1#0"):
        index.write(NAME, [zero])


def test_ledger_round_trip(index, cluster):
    expect_write(cluster)
    index.write(NAME, [REPLACED, DELETED])
    lines = cluster.one("POST", f"/{LEDGER}/_bulk").body
    sources = {line["doc_id"]: line for line in lines[1::2]}
    cluster.on("POST", f"/{LEDGER}/_mget", (200, {"docs": [
        {"_index": LEDGER, "_id": doc_id, "_version": 1, "_seq_no": n, "_primary_term": 1,
         "found": True, "_source": sources[doc_id]} for n, doc_id in enumerate(["d1", "d2"])
    ] + [{"_index": LEDGER, "_id": "d3", "found": False}]}))

    entries = index.ledger(NAME, ["d1", "d2", "d3"])

    assert cluster.one("POST", f"/{LEDGER}/_mget").body == {"ids": ["d1", "d2", "d3"]}
    assert entries == {"d1": REPLACED.entry, "d2": DELETED.entry}
    # The order key comes back with its types, so the indexer's comparison still works.
    assert entries["d1"].order_key < (1_795_000_000_000, 0, "chg-90")
    assert index.ledger(NAME, []) == {}


def test_vectors_are_read_with_mget_of_the_vector_field(index, cluster):
    cluster.on("POST", f"/{NAME}/_mget", (200, {"docs": [
        {"_index": NAME, "_id": "d1#0", "_version": 1, "_seq_no": 5, "_primary_term": 1,
         "found": True, "_source": {"vector": [0.1, 0.2, 0.3, 0.4]}},
        {"_index": NAME, "_id": "d1#9", "found": False}]}))
    found = index.vectors(NAME, ["d1#0", "d1#9"])
    assert cluster.one("POST", f"/{NAME}/_mget").body == {"docs": [
        {"_id": "d1#0", "_source": ["vector"]}, {"_id": "d1#9", "_source": ["vector"]}]}
    assert list(found) == ["d1#0"]
    assert found["d1#0"].dtype == np.float32
    np.testing.assert_array_equal(found["d1#0"], np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    assert index.vectors(NAME, []) == {}


# ---- reads ---------------------------------------------------------------------------------

def search_response(*scored: tuple[str, float]) -> dict:
    return {"took": 47, "timed_out": False, "_shards": SHARDS,
            "hits": {"total": {"value": len(scored), "relation": "eq"},
                     "max_score": max((s for _, s in scored), default=None),
                     "hits": [{"_index": NAME, "_id": cid, "_score": score, "_source": {
                         "chunk_id": cid, "doc_id": cid.split("#")[0], "position": 0,
                         "doc_type": "faq", "language": "fr", "merchant_id": "m-42",
                         "title": "Remboursements", "heading": "Délais",
                         "source_url": "https://help.example/r", "text": f"text of {cid}",
                         "updated_at": 1_795_000_000_000}} for cid, score in scored]}}


def test_search_puts_the_filters_inside_the_knn_clause(index, cluster):
    cluster.on("POST", f"/{NAME}/_search", (200, search_response(("d1#0", 0.9))))
    index.search(NAME, np.array([0.5, 0.25, 0.0, -1.0], np.float32), 3,
                 SearchFilter(language="fr", merchant_id="m-42"))
    assert cluster.one("POST", f"/{NAME}/_search").body == {
        "size": 3,
        "query": {"knn": {"vector": {
            "vector": [0.5, 0.25, 0.0, -1.0], "k": 3,
            "method_parameters": {"ef_search": 100},
            "filter": {"bool": {"filter": [{"term": {"language": "fr"}},
                                           {"term": {"merchant_id": "m-42"}}]}}}}},
        "_source": {"excludes": ["vector"]}}


def test_search_without_filters_sends_no_filter(index, cluster):
    cluster.on("POST", f"/{NAME}/_search", (200, search_response()))
    assert index.search(NAME, np.array([1.0, 0.0, 0.0, 0.0]), 5) == []
    clause = cluster.one("POST", f"/{NAME}/_search").body["query"]["knn"]["vector"]
    assert "filter" not in clause and clause["k"] == 5


def test_search_scores_are_converted_back_to_cosine_similarity(index, cluster):
    cluster.on("POST", f"/{NAME}/_search", (200, search_response(
        ("d1#0", 1.0), ("d2#0", 0.75), ("d3#0", 0.5), ("d4#0", 0.0))))
    hits = index.search(NAME, np.array([1.0, 0.0, 0.0, 0.0]), 4)
    assert [h.score for h in hits] == [1.0, 0.5, 0.0, -1.0]
    first = hits[0]
    assert (first.chunk_id, first.doc_id, first.title, first.heading, first.source_url,
            first.text) == ("d1#0", "d1", "Remboursements", "Délais",
                            "https://help.example/r", "text of d1#0")


def test_cosine_from_score_inverts_the_documented_formula():
    for cos in (-1.0, -0.3, 0.0, 0.42, 1.0):
        d = 1 - cos  # the documented cosinesimil distance
        assert cosine_from_score((2 - d) / 2) == pytest.approx(cos)


def test_search_with_failed_shards_raises(index, cluster):
    response = search_response(("d1#0", 0.9))
    response["_shards"] = {"total": 2, "successful": 1, "skipped": 0, "failed": 1,
                           "failures": [{"shard": 1, "index": NAME,
                                         "reason": {"type": "x", "reason": "node left"}}]}
    cluster.on("POST", f"/{NAME}/_search", (200, response))
    with pytest.raises(VectorIndexError, match="incomplete.*node left"):
        index.search(NAME, np.array([1.0, 0.0, 0.0, 0.0]), 1)


def msearch_response(*responses: dict) -> dict:
    return {"took": 51, "responses": [{**r, "status": 200} for r in responses]}


def test_hybrid_search_sends_knn_and_match_in_one_msearch_with_the_same_filters(index,
                                                                                cluster):
    cluster.on("POST", f"/{NAME}/_msearch", (200, msearch_response(search_response(),
                                                                   search_response())))
    index.search(NAME, np.array([0.5, 0.25, 0.0, -1.0], np.float32), 3,
                 SearchFilter(doc_type="MERCHANT_HELP", merchant_id="m-42"),
                 text="remboursement chez Maple Oak")
    request = cluster.one("POST", f"/{NAME}/_msearch")
    assert request.raw.endswith(b"\n")  # NDJSON: header line, body line, each ended
    terms = [{"term": {"doc_type": "MERCHANT_HELP"}}, {"term": {"merchant_id": "m-42"}}]
    assert request.body == [
        {},
        {"size": 20, "query": {"knn": {"vector": {
            "vector": [0.5, 0.25, 0.0, -1.0], "k": 20, "method_parameters": {"ef_search": 100},
            "filter": {"bool": {"filter": terms}}}}},
         "_source": {"excludes": ["vector"]}},
        {},
        {"size": 20, "query": {"bool": {
            "should": [{"match": {f"lexical_{lang}": {"query": "remboursement chez Maple Oak"}}}
                       for lang in ("en", "fr", "de", "es")],
            "minimum_should_match": 1, "filter": terms}},
         "_source": {"excludes": ["vector"]}},
    ]


def test_hybrid_search_with_a_language_filter_matches_that_language_only(index, cluster):
    cluster.on("POST", f"/{NAME}/_msearch", (200, msearch_response(search_response(),
                                                                   search_response())))
    index.search(NAME, np.array([1.0, 0.0, 0.0, 0.0]), 5, SearchFilter(language="de"),
                 text="Karte abgelehnt")
    lexical = cluster.one("POST", f"/{NAME}/_msearch").body[3]["query"]["bool"]
    assert lexical["should"] == [{"match": {"lexical_de": {"query": "Karte abgelehnt"}}}]
    assert lexical["filter"] == [{"term": {"language": "de"}}]


def test_hybrid_search_fuses_both_rankings_by_reciprocal_rank_one_chunk_per_document(
        index, cluster):
    by_meaning = search_response(("d1#0", 0.95), ("d2#0", 0.9), ("d1#1", 0.85), ("d3#0", 0.8))
    by_words = search_response(("d4#0", 12.0), ("d3#0", 7.5), ("d2#0", 3.1))
    cluster.on("POST", f"/{NAME}/_msearch", (200, msearch_response(by_meaning, by_words)))
    hits = index.search(NAME, np.array([1.0, 0.0, 0.0, 0.0]), 3, text="Maple Oak")
    # d2#0: 1/62 + 1/63, d3#0: 1/64 + 1/62, d1#0: 1/61 (d1#1 is d1's second chunk: dropped),
    # d4#0: 1/61, behind d1#0 on the tie because kNN's ranking comes first.
    assert [h.chunk_id for h in hits] == ["d2#0", "d3#0", "d1#0"]
    assert [h.score for h in hits] == pytest.approx([1 / 62 + 1 / 63, 1 / 64 + 1 / 62, 1 / 61])
    assert hits[0].text == "text of d2#0" and hits[0].title == "Remboursements"


def test_a_failed_msearch_item_raises_instead_of_fusing_half_a_ranking(index, cluster):
    failed = {"error": {"root_cause": [], "type": "query_shard_exception",
                        "reason": "failed to create query"}, "status": 400}
    cluster.on("POST", f"/{NAME}/_msearch",
               (200, {"took": 3, "responses": [{**search_response(("d1#0", 0.9)),
                                                "status": 200}, failed]}))
    with pytest.raises(VectorIndexError, match="hybrid search on .*query_shard_exception"):
        index.search(NAME, np.array([1.0, 0.0, 0.0, 0.0]), 3, text="refund")


def test_search_without_words_or_with_an_unanalysed_language_stays_knn(index, cluster):
    cluster.on("POST", f"/{NAME}/_search", (200, search_response(("d1#0", 0.75))))
    vector = np.array([1.0, 0.0, 0.0, 0.0])
    for text, filters in ((None, SearchFilter()), ("  ", SearchFilter()),
                          ("hallo", SearchFilter(language="nl"))):
        assert [h.score for h in index.search(NAME, vector, 1, filters, text=text)] == [0.5]
    assert set(cluster.calls()) == {("POST", f"/{NAME}/_search")}


def composite_page(doc_ids: list[str], after: str | None) -> dict:
    page: dict[str, Any] = {"buckets": [{"key": {"doc_id": d}, "doc_count": 2}
                                        for d in doc_ids]}
    if after is not None:
        page["after_key"] = {"doc_id": after}
    return {"took": 11, "timed_out": False, "_shards": SHARDS,
            "hits": {"total": {"value": 5, "relation": "eq"}, "max_score": None, "hits": []},
            "aggregations": {"docs": page}}


def test_live_documents_pages_through_a_composite_aggregation(index, cluster, monkeypatch):
    monkeypatch.setattr(opensearch_index, "LIVE_PAGE", 2)
    cluster.on("POST", f"/{NAME}/_search", (200, composite_page(["d1", "d2"], "d2")),
               (200, composite_page(["d3"], "d3")))
    assert index.live_documents(NAME) == {"d1", "d2", "d3"}
    first, second = cluster.sent("POST", f"/{NAME}/_search")
    assert first.body == {"size": 0, "track_total_hits": False, "aggs": {"docs": {"composite": {
        "size": 2, "sources": [{"doc_id": {"terms": {"field": "doc_id"}}}]}}}}
    assert second.body["aggs"]["docs"]["composite"]["after"] == {"doc_id": "d2"}


# ---- errors and credentials ----------------------------------------------------------------

@pytest.mark.parametrize("status, kind", [(404, "index_not_found_exception"),
                                          (500, "internal_server_error")])
def test_http_errors_become_vector_index_errors_naming_index_and_operation(index, cluster,
                                                                           status, kind):
    cluster.on("POST", f"/{NAME}/_search", error(status, kind, "boom"))
    with pytest.raises(VectorIndexError) as raised:
        index.search(NAME, np.array([1.0, 0.0, 0.0, 0.0]), 1)
    message = str(raised.value)
    assert f"search on '{NAME}'" in message and f"HTTP {status} {kind}" in message


def test_a_missing_ledger_index_becomes_a_vector_index_error(index, cluster):
    cluster.on("POST", f"/{LEDGER}/_mget", error(404, "index_not_found_exception", "no such"))
    with pytest.raises(VectorIndexError, match=f"read ledger on '{LEDGER}'"):
        index.ledger(NAME, ["d1"])


def test_an_unreachable_cluster_becomes_a_vector_index_error(index, cluster):
    def refuse(method, path, params, raw):
        cluster.requests.append(Request(method, path, {}, None, raw))
        raise OpenSearchConnectionError("N/A", "connection refused", OSError("refused"))

    cluster.answer = refuse
    with pytest.raises(VectorIndexError, match="read alias on 'knowledge'.*cannot reach"):
        index.alias_target("knowledge")


def test_open_index_picks_opensearch_without_touching_the_network(cluster):
    index = open_index(RetrievalConfig(index=CONFIG))
    assert isinstance(index, OpenSearchVectorIndex) and index.config == CONFIG
    index.close()


def with_credentials(cluster: FakeCluster) -> OpenSearchVectorIndex:
    config = CONFIG.model_copy(update={"username_env": "TEST_OS_USER",
                                       "password_env": "TEST_OS_PASSWORD"})
    return OpenSearchVectorIndex(config, connection_class=cluster.connection_class())


def test_credentials_come_from_the_environment(cluster, monkeypatch):
    monkeypatch.setenv("TEST_OS_USER", "indexer")
    monkeypatch.setenv("TEST_OS_PASSWORD", "s3cret-pw")
    cluster.on("GET", "/_alias/knowledge", error(401, "security_exception", "unauthorized"))
    index = with_credentials(cluster)
    with pytest.raises(VectorIndexError) as raised:
        index.alias_target("knowledge")
    (connection,) = cluster.connections
    expected = base64.b64encode(b"indexer:s3cret-pw").decode()
    assert connection.headers["authorization"] == f"Basic {expected}"
    assert "s3cret-pw" not in str(raised.value)
    # https host: certificates are verified.
    assert connection.pool.cert_reqs == "CERT_REQUIRED"


def test_unset_credential_variables_are_named_and_nothing_is_sent(cluster, monkeypatch):
    monkeypatch.delenv("TEST_OS_USER", raising=False)
    monkeypatch.setenv("TEST_OS_PASSWORD", "s3cret-pw")
    with pytest.raises(VectorIndexError, match="TEST_OS_USER") as raised:
        with_credentials(cluster).alias_target("knowledge")
    assert "s3cret-pw" not in str(raised.value)
    assert cluster.requests == [] and cluster.connections == []


def test_no_credentials_configured_means_no_authorization_header(index, cluster):
    cluster.on("GET", "/_alias/knowledge", error(404, "aliases_not_found_exception", "missing"))
    assert index.alias_target("knowledge") is None
    (connection,) = cluster.connections
    assert "authorization" not in connection.headers

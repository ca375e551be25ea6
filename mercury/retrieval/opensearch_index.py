"""The vector index on OpenSearch: one k-NN index per version, aliases, a ledger, filtered kNN.

Design notes: docs/RETRIEVAL.md, "The OpenSearch index in detail".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from opensearchpy import OpenSearch, Urllib3HttpConnection
from opensearchpy.exceptions import (
    ConflictError,
    NotFoundError,
    OpenSearchException,
    RequestError,
    TransportError,
)
from opensearchpy.exceptions import ConnectionError as ClusterUnreachable  # not the builtin

from mercury.config import OpenSearchVectorConfig
from mercury.retrieval import hybrid
from mercury.retrieval.index import (
    ChunkRow,
    DocumentWrite,
    Hit,
    LedgerEntry,
    SearchFilter,
    VectorIndex,
    VectorIndexError,
    VersionSpec,
)

REGISTRY = "mercury-index-registry"
REFRESH_INTERVAL = "1s"
STATES = ("building", "ready", "retired")
SPEC_FIELDS = ("name", "alias", "embedding_model", "embedding_version", "chunking", "dimension",
               "created_at_ms")
HISTORY_KEPT = 20          # alias history entries kept; rollback only needs the last two
LIVE_PAGE = 1000           # composite buckets per page when listing live documents
MAX_K = 10_000             # the k-NN query's documented upper bound for k
REPORTED_FAILURES = 5      # failing ids named in an error message
NO_FILTER = SearchFilter()
# The full-text fields' analysers, by the hybrid module's lexical languages: OpenSearch's
# built-in language analyzers (each language's stop words and stemmer; french also removes
# elisions such as l', german normalises umlauts).
ANALYZERS = {"en": "english", "fr": "french", "de": "german", "es": "spanish"}
assert set(ANALYZERS) == set(hybrid.LEXICAL_LANGUAGES)


def ledger_index(name: str) -> str:
    return f"{name}-ledger"


def cosine_from_score(score: float) -> float:
    """OpenSearch's cosinesimil score is (1 + cos) / 2; this returns cos."""
    return max(-1.0, min(1.0, 2.0 * score - 1.0))


# ---- index bodies --------------------------------------------------------------------------

def chunk_index_body(spec: VersionSpec, config: OpenSearchVectorConfig) -> dict:
    stored_only = {"type": "text", "index": False}
    return {
        "settings": {"index": {
            "number_of_shards": config.shards,
            "number_of_replicas": config.replicas,
            "refresh_interval": REFRESH_INTERVAL,
            "knn": True,
            "knn.algo_param.ef_search": config.hnsw_ef_search,
        }},
        "mappings": {
            "dynamic": "strict",
            "_meta": {"version_spec": {f: getattr(spec, f) for f in SPEC_FIELDS}},
            "properties": {
                "chunk_id": {"type": "keyword"},
                "doc_id": {"type": "keyword"},
                "doc_type": {"type": "keyword"},
                "language": {"type": "keyword"},
                "merchant_id": {"type": "keyword"},
                "position": {"type": "integer"},
                "updated_at": {"type": "date", "format": "epoch_millis"},
                "title": stored_only,
                "heading": stored_only,
                "text": stored_only,
                "source_url": {"type": "keyword", "index": False, "doc_values": False},
                **{hybrid.lexical_field(language): {"type": "text", "analyzer": analyzer}
                   for language, analyzer in ANALYZERS.items()},
                "vector": {
                    "type": "knn_vector",
                    "dimension": spec.dimension,
                    "method": {
                        "name": "hnsw",
                        "engine": "lucene",
                        "space_type": "cosinesimil",
                        "parameters": {"m": config.hnsw_m,
                                       "ef_construction": config.hnsw_ef_construction},
                    },
                },
            },
        },
    }


def ledger_index_body(config: OpenSearchVectorConfig) -> dict:
    return {
        "settings": {"index": {"number_of_shards": config.shards,
                               "number_of_replicas": config.replicas}},
        "mappings": {"dynamic": "strict", "properties": {
            "doc_id": {"type": "keyword"},
            "order_key": {"type": "keyword", "index": False, "doc_values": False},
            "deleted": {"type": "boolean"},
            "chunk_ids": {"type": "keyword"},
        }},
    }


def registry_index_body(config: OpenSearchVectorConfig) -> dict:
    keyword = {"type": "keyword"}
    return {
        "settings": {"index": {"number_of_shards": 1, "number_of_replicas": config.replicas}},
        "mappings": {"dynamic": "strict", "properties": {
            "kind": keyword, "name": keyword, "alias": keyword, "embedding_model": keyword,
            "embedding_version": keyword, "chunking": keyword, "dimension": {"type": "integer"},
            "created_at_ms": {"type": "long"}, "state": keyword, "history": keyword,
        }},
    }


# ---- documents -----------------------------------------------------------------------------

def vector_json(vector: np.ndarray) -> list[float]:
    """The vector as float32 values in their shortest decimal form: the bulk body stays about
    half the size of float64 digits, and OpenSearch stores float32 anyway."""
    return np.asarray(vector, dtype=np.float32).astype(str).astype(np.float64).tolist()


def chunk_source(row: ChunkRow, lexical: bool = True) -> dict:
    """The chunk as indexed; with ``lexical`` (the version's mapping has the full-text fields)
    its words go to its own language's field too."""
    source = {"chunk_id": row.chunk_id, "doc_id": row.doc_id, "position": row.position,
              "doc_type": row.doc_type, "language": row.language,
              "merchant_id": row.merchant_id, "title": row.title, "heading": row.heading,
              "source_url": row.source_url, "text": row.text, "updated_at": row.updated_at,
              "vector": vector_json(row.vector)}
    if lexical and row.language in ANALYZERS:
        source[hybrid.lexical_field(row.language)] = hybrid.lexical_text(row)
    return source


def ledger_source(entry: LedgerEntry) -> dict:
    return {"doc_id": entry.doc_id, "order_key": json.dumps(list(entry.order_key)),
            "deleted": entry.deleted, "chunk_ids": list(entry.chunk_ids)}


def ledger_entry(source: dict) -> LedgerEntry:
    return LedgerEntry(source["doc_id"], tuple(json.loads(source["order_key"])),
                       bool(source["deleted"]), tuple(source["chunk_ids"]))


def stale_chunks_query(writes: list[DocumentWrite]) -> dict:
    """Each written document's chunks that are not among its new rows."""
    clauses = []
    for write in writes:
        clause: dict[str, Any] = {"filter": [{"term": {"doc_id": write.entry.doc_id}}]}
        if write.rows:
            clause["must_not"] = [{"ids": {"values": [r.chunk_id for r in write.rows]}}]
        clauses.append({"bool": clause})
    return {"query": {"bool": {"should": clauses, "minimum_should_match": 1}}}


def filter_terms(filters: SearchFilter) -> list[dict]:
    return [{"term": {field: value}} for field, value in filters.as_dict().items()]


def knn_query(vector: np.ndarray, k: int, filters: SearchFilter, ef_search: int) -> dict:
    clause: dict[str, Any] = {"vector": vector_json(vector), "k": k,
                              "method_parameters": {"ef_search": ef_search}}
    terms = filter_terms(filters)
    if terms:
        clause["filter"] = {"bool": {"filter": terms}}
    return {"size": k, "query": {"knn": {"vector": clause}},
            "_source": {"excludes": ["vector"]}}


def lexical_query(text: str, k: int, filters: SearchFilter, fields: tuple[str, ...]) -> dict:
    """BM25 over the language fields: one ``match`` per field (a chunk fills only its own
    language's field, so at most one matches and its score is that field's), the filters as
    non-scoring clauses, so both sides of the fusion search the same chunks."""
    query: dict[str, Any] = {"should": [{"match": {field: {"query": text}}} for field in fields],
                             "minimum_should_match": 1}
    terms = filter_terms(filters)
    if terms:
        query["filter"] = terms
    return {"size": k, "query": {"bool": query}, "_source": {"excludes": ["vector"]}}


def hit_from(hit: dict, score: float | None = None) -> Hit:
    """The hit with its cosine similarity, or with ``score`` (the fused one) when given."""
    source = hit["_source"]
    return Hit(chunk_id=source["chunk_id"], doc_id=source["doc_id"],
               title=source.get("title", ""), heading=source.get("heading", ""),
               source_url=source.get("source_url"), text=source.get("text", ""),
               score=cosine_from_score(hit["_score"]) if score is None else score)


def spec_from(source: dict) -> VersionSpec:
    return VersionSpec(**{f: source[f] for f in SPEC_FIELDS}, state=source["state"])


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:REPORTED_FAILURES])
    return shown + (f" and {len(ids) - REPORTED_FAILURES} more" if len(ids) > REPORTED_FAILURES
                    else "")


def bulk_failures(response: dict) -> list[str]:
    """``id (type: reason)`` of every failed bulk item; empty when all succeeded."""
    if not response.get("errors"):
        return []
    failed = []
    for item in response.get("items", []):
        result = next(iter(item.values()))
        if "error" in result:
            error = result["error"]
            failed.append(f"{result.get('_id')} ({error.get('type')}: {error.get('reason')})"
                          if isinstance(error, dict) else f"{result.get('_id')} ({error})")
    return failed


def _reason(exc: OpenSearchException) -> str:
    if isinstance(exc, ClusterUnreachable):  # no HTTP status: the cluster was not reached
        return f"cannot reach the cluster: {exc.info or exc.error}"
    if not isinstance(exc, TransportError):
        return f"{type(exc).__name__}: {exc}"
    info = exc.info if isinstance(exc.info, dict) else {}
    error = info.get("error")
    if isinstance(error, dict):
        return f"HTTP {exc.status_code} {error.get('type')}: {error.get('reason')}"
    return f"HTTP {exc.status_code} {exc.error}"


def _shard_failures(response: dict) -> str | None:
    shards = response.get("_shards", {})
    if not shards.get("failed"):
        return None
    reasons = [f.get("reason", {}).get("reason") for f in shards.get("failures", [])]
    return f"{shards['failed']} of {shards.get('total')} shards failed: {reasons[:1]}"


class OpenSearchVectorIndex(VectorIndex):
    """``VectorIndex`` over an OpenSearch cluster with the k-NN plugin.

    ``client`` (a ready ``OpenSearch``) or ``connection_class`` (used to build one from
    config) may be injected; tests use the latter to see every request on the wire."""

    def __init__(self, config: OpenSearchVectorConfig, client: OpenSearch | None = None,
                 connection_class: type | None = None):
        self.config = config
        self._client = client
        self._connection_class = connection_class or Urllib3HttpConnection
        self._registry_ready = False
        # version -> whether its mapping has the full-text fields; both indexes seen to exist
        self._known_versions: dict[str, bool] = {}

    # ---- client ------------------------------------------------------------------------------

    @property
    def client(self) -> OpenSearch:
        if self._client is None:
            if not self.config.hosts:
                raise VectorIndexError("retrieval.index.hosts is empty: name the OpenSearch "
                                       "endpoints")
            try:
                self._client = OpenSearch(
                    hosts=list(self.config.hosts), http_auth=self._basic_auth(),
                    verify_certs=True, ssl_show_warn=True,
                    connection_class=self._connection_class, timeout=30)
            except OpenSearchException as exc:
                raise VectorIndexError(f"cannot set up the OpenSearch client: {exc}") from exc
        return self._client

    def _basic_auth(self) -> tuple[str, str] | None:
        names = (self.config.username_env, self.config.password_env)
        if names == (None, None):
            return None
        if None in names:
            raise VectorIndexError("retrieval.index needs both username_env and password_env "
                                   "(or neither)")
        both = cast("tuple[str, str]", names)  # neither is None (checked above)
        missing = [name for name in both if not os.environ.get(name)]
        if missing:
            raise VectorIndexError(f"OpenSearch credentials: environment variable(s) "
                                   f"{', '.join(missing)} not set")
        return os.environ[both[0]], os.environ[both[1]]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @contextmanager
    def _failing(self, operation: str, target: str) -> Iterator[None]:
        """Any OpenSearch error inside becomes a VectorIndexError naming what was attempted."""
        try:
            yield
        except OpenSearchException as exc:
            raise VectorIndexError(
                f"OpenSearch {operation} on {target!r} failed: {_reason(exc)}") from exc

    # ---- versions and aliases ----------------------------------------------------------------

    def create_version(self, spec: VersionSpec) -> None:
        self._ensure_registry()
        self._create_index(spec.name, chunk_index_body(spec, self.config))
        self._create_index(ledger_index(spec.name), ledger_index_body(self.config))
        # The record comes last, so a listed version always has its indexes; _create keeps
        # the state of a version recorded before (creating again does nothing).
        with self._failing("record version", REGISTRY):
            try:
                self.client.create(index=REGISTRY, id=f"version.{spec.name}",
                                   body={"kind": "version",
                                         **{f: getattr(spec, f) for f in SPEC_FIELDS},
                                         "state": spec.state},
                                   refresh="wait_for")
            except ConflictError:
                pass
        self._known_versions[spec.name] = True  # chunk_index_body maps the full-text fields

    def versions(self, alias: str) -> list[VersionSpec]:
        body = {"size": MAX_K,
                "query": {"bool": {"filter": [{"term": {"kind": "version"}},
                                              {"term": {"alias": alias}}]}},
                "sort": [{"created_at_ms": "asc"}, {"name": "asc"}]}
        with self._failing("list versions", REGISTRY):
            try:
                found = self.client.search(index=REGISTRY, body=body)
            except NotFoundError:
                return []  # no version was ever created on this cluster
        return [spec_from(hit["_source"]) for hit in found["hits"]["hits"]]

    def set_state(self, name: str, state: str) -> None:
        if state not in STATES:
            raise VectorIndexError(f"unknown version state {state!r}; one of {STATES}")
        with self._failing("set state", name):
            try:
                self.client.update(index=REGISTRY, id=f"version.{name}",
                                   body={"doc": {"state": state}}, refresh="wait_for")
            except NotFoundError as exc:
                raise VectorIndexError(f"no index version named {name!r}") from exc

    def drop_version(self, name: str) -> None:
        with self._failing("read aliases", name):
            try:
                aliases = self.client.indices.get_alias(index=name)[name]["aliases"]
            except NotFoundError:
                aliases = {}
        if aliases:
            raise VectorIndexError(f"{name!r} is served by alias {', '.join(aliases)}; swap or "
                                   f"roll the alias to another version before dropping it")
        self._known_versions.pop(name, None)
        for index in (name, ledger_index(name)):
            with self._failing("delete index", index):
                try:
                    self.client.indices.delete(index=index)
                except NotFoundError:
                    pass
        with self._failing("delete version record", REGISTRY):
            try:
                self.client.delete(index=REGISTRY, id=f"version.{name}", refresh="wait_for")
            except NotFoundError:
                pass

    def alias_target(self, alias: str) -> str | None:
        with self._failing("read alias", alias):
            try:
                found = self.client.indices.get_alias(name=alias)
            except NotFoundError:
                return None
        if len(found) > 1:
            raise VectorIndexError(f"alias {alias!r} points at several indexes "
                                   f"({', '.join(sorted(found))}); point it at one")
        return next(iter(found), None)

    def swap_alias(self, alias: str, name: str) -> str | None:
        previous, _ = self._repoint(alias, "swap", lambda history, current: name)
        return previous

    def rollback_alias(self, alias: str) -> str:
        def previous(history: list[str], current: str | None) -> str:
            if current is None or len(history) < 2:
                raise VectorIndexError(f"alias {alias!r} has no earlier version to roll "
                                       f"back to")
            target = history[-2]
            record = self._version_record(target)
            if record is None or record["state"] == "retired":
                why = "was dropped" if record is None else "is retired (no longer maintained)"
                raise VectorIndexError(f"cannot roll alias {alias!r} back to {target!r}: it "
                                       f"{why}; rebuild instead")
            return target

        _, target = self._repoint(alias, "rollback", previous)
        return target

    def _repoint(self, alias: str, operation: str,
                 choose: Callable[[list[str], str | None], str]) -> tuple[str | None, str]:
        """Moves the alias to ``choose(history, current)``, then records the move; returns
        where it pointed before and where it points now."""
        self._ensure_registry()
        history, token = self._read_history(alias)
        current = self.alias_target(alias)
        if current is not None and history[-1:] != [current]:
            history.append(current)  # a move whose record was lost (crash): record it now
        target = choose(history, current)
        if target == current:
            return current, target
        self._move_alias(alias, current, target, operation)
        if not self._save_history(alias, (history + [target])[-HISTORY_KEPT:], token):
            # Another swap recorded itself since we read the history: undo ours, so the
            # alias and its record agree, and let the caller retry.
            self._move_alias(alias, target, current, f"undo {operation}")
            raise VectorIndexError(f"alias {alias!r} was changed by another process during "
                                   f"{operation}; nothing changed, try again")
        return current, target

    def _move_alias(self, alias: str, source: str | None, target: str | None,
                    operation: str) -> None:
        actions = []
        if source is not None:
            actions.append({"remove": {"index": source, "alias": alias}})
        if target is not None:
            actions.append({"add": {"index": target, "alias": alias}})
        with self._failing(f"{operation} alias {alias!r}", target or alias):
            try:
                answer = self.client.indices.update_aliases(body={"actions": actions})
            except NotFoundError as exc:
                if source is None or exc.error != "aliases_not_found_exception":
                    raise
                # The remove is our compare-and-swap: the alias left ``source`` meanwhile.
                raise VectorIndexError(f"alias {alias!r} no longer points at {source!r}: "
                                       f"another process moved it; nothing changed, try "
                                       f"again") from exc
        if not answer.get("acknowledged"):
            raise VectorIndexError(f"OpenSearch did not acknowledge the {operation} of alias "
                                   f"{alias!r} to {target!r}; check the cluster and retry")

    def _read_history(self, alias: str) -> tuple[list[str], tuple[int, int] | None]:
        with self._failing("read alias history", REGISTRY):
            try:
                doc = self.client.get(index=REGISTRY, id=f"alias.{alias}")
            except NotFoundError:
                return [], None
        return list(doc["_source"]["history"]), (doc["_seq_no"], doc["_primary_term"])

    def _save_history(self, alias: str, history: list[str],
                      token: tuple[int, int] | None) -> bool:
        """Writes the history if nobody else has since it was read; False if someone has."""
        body = {"kind": "alias", "alias": alias, "history": history}
        with self._failing("record alias history", REGISTRY):
            try:
                if token is None:
                    self.client.create(index=REGISTRY, id=f"alias.{alias}", body=body,
                                       refresh="wait_for")
                else:
                    self.client.index(index=REGISTRY, id=f"alias.{alias}", body=body,
                                      if_seq_no=token[0], if_primary_term=token[1],
                                      refresh="wait_for")
            except ConflictError:
                return False
        return True

    def _version_record(self, name: str) -> dict | None:
        with self._failing("read version record", REGISTRY):
            try:
                return self.client.get(index=REGISTRY, id=f"version.{name}")["_source"]
            except NotFoundError:
                return None

    def _ensure_registry(self) -> None:
        if not self._registry_ready:
            self._create_index(REGISTRY, registry_index_body(self.config))
            self._registry_ready = True

    def _create_index(self, index: str, body: dict) -> None:
        with self._failing("create index", index):
            try:
                self.client.indices.create(index=index, body=body)
            except RequestError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise

    # ---- writes ------------------------------------------------------------------------------

    def ledger(self, name: str, doc_ids: list[str]) -> dict[str, LedgerEntry]:
        if not doc_ids:
            return {}
        index = ledger_index(name)
        with self._failing("read ledger", index):
            found = self.client.mget(index=index, body={"ids": list(doc_ids)})
        return {doc["_id"]: ledger_entry(doc["_source"])
                for doc in self._found(found, "read ledger", index)}

    def vectors(self, name: str, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        if not chunk_ids:
            return {}
        body = {"docs": [{"_id": cid, "_source": ["vector"]} for cid in chunk_ids]}
        with self._failing("read vectors", name):
            found = self.client.mget(index=name, body=body)
        return {doc["_id"]: np.asarray(doc["_source"]["vector"], dtype=np.float32)
                for doc in self._found(found, "read vectors", name)}

    @staticmethod
    def _found(response: dict, operation: str, index: str) -> list[dict]:
        """The documents an _mget found; a per-document error (missing index...) raises."""
        errors = [f"{doc.get('_id')} ({doc['error'].get('type')})"
                  for doc in response["docs"] if "error" in doc]
        if errors:
            raise VectorIndexError(f"OpenSearch {operation} on {index!r} failed for "
                                   f"{_ids(errors)}")
        return [doc for doc in response["docs"] if doc.get("found")]

    def write(self, name: str, writes: list[DocumentWrite]) -> None:
        if not writes:
            return
        lexical = self._require_version(name)
        rows = [row for w in writes for row in w.rows]
        zero = [row.chunk_id for row in rows if not np.any(row.vector)]
        if zero:
            raise VectorIndexError(f"{name}: zero vectors have no cosine similarity and "
                                   f"OpenSearch rejects them: {_ids(zero)}")
        if rows:
            actions: list[dict] = []
            for row in rows:
                actions += [{"index": {"_id": row.chunk_id}}, chunk_source(row, lexical)]
            self._bulk(name, actions, "write chunks", refresh="wait_for")
        with self._failing("remove replaced chunks", name):
            removed = self.client.delete_by_query(index=name, body=stale_chunks_query(writes),
                                                  refresh=True)
        if removed.get("failures") or removed.get("timed_out"):
            raise VectorIndexError(f"OpenSearch remove replaced chunks on {name!r} did not "
                                   f"finish: {(removed.get('failures') or ['timed out'])[0]}")
        entries: list[dict] = []
        for write in writes:
            entries += [{"index": {"_id": write.entry.doc_id}}, ledger_source(write.entry)]
        self._bulk(ledger_index(name), entries, "write ledger")

    def _bulk(self, index: str, actions: list[dict], operation: str, **params: str) -> None:
        with self._failing(operation, index):
            answer = self.client.bulk(index=index, body=actions, **params)
        failed = bulk_failures(answer)
        if failed:
            raise VectorIndexError(f"OpenSearch {operation} on {index!r}: {len(failed)} of "
                                   f"{len(answer.get('items', []))} items failed: {_ids(failed)}")

    def _require_version(self, name: str) -> bool:
        """Checks that both indexes exist, once per process; returns whether the version's
        mapping has the full-text fields (a version created before hybrid search has not,
        and its strict mapping would refuse them)."""
        if name in self._known_versions:
            return self._known_versions[name]
        both = [name, ledger_index(name)]
        with self._failing("check version", name):
            try:
                mappings = self.client.indices.get_mapping(index=both)
            except NotFoundError:
                raise VectorIndexError(f"no index version {name!r} (or its ledger) on the "
                                       f"cluster; create_version first") from None
        fields = mappings.get(name, {}).get("mappings", {}).get("properties", {})
        self._known_versions[name] = all(f in fields for f in hybrid.LEXICAL_FIELDS)
        return self._known_versions[name]

    # ---- reads -------------------------------------------------------------------------------

    def search(self, name: str, vector: np.ndarray, k: int,
               filters: SearchFilter = NO_FILTER, text: str | None = None) -> list[Hit]:
        if not 1 <= k <= MAX_K:
            raise VectorIndexError(f"k must be between 1 and {MAX_K}, not {k}")
        if not np.any(vector):
            raise VectorIndexError("a zero query vector has no cosine similarity")
        fields = hybrid.lexical_fields_for(filters)
        if text is None or not text.strip() or not fields:
            body = knn_query(vector, k, filters, self.config.hnsw_ef_search)
            with self._failing("search", name):
                found = self.client.search(index=name, body=body)
            return [hit_from(hit) for hit in self._hits(found, "search", name)]
        # Both searches in one round trip; fused here, with the local engine's code. On a
        # version created before hybrid search the fields are unmapped and the match finds
        # nothing, so the fusion returns the kNN order.
        depth = min(MAX_K, hybrid.depth(k))
        with self._failing("hybrid search", name):
            found = self.client.msearch(index=name, body=[
                {}, knn_query(vector, depth, filters, self.config.hnsw_ef_search),
                {}, lexical_query(text, depth, filters, fields)])
        by_meaning, by_words = (self._hits(response, "hybrid search", name)
                                for response in found["responses"])
        sources = {hit["_source"]["chunk_id"]: hit for hit in (*by_words, *by_meaning)}
        fused = hybrid.fuse([[h["_source"]["chunk_id"] for h in by_meaning],
                             [h["_source"]["chunk_id"] for h in by_words]], k,
                            group_of={cid: hit["_source"]["doc_id"]
                                      for cid, hit in sources.items()})
        return [hit_from(sources[chunk_id], score) for chunk_id, score in fused]

    @staticmethod
    def _hits(response: dict, operation: str, name: str) -> list[dict]:
        """The hits of one search response; an error or a failed shard raises (a partial
        ranking would fuse silently into a wrong one)."""
        if "error" in response:  # an _msearch item fails on its own, with a 200 overall
            error = response["error"]
            reason = (f"{error.get('type')}: {error.get('reason')}" if isinstance(error, dict)
                      else str(error))
            raise VectorIndexError(f"OpenSearch {operation} on {name!r} failed: {reason}")
        failure = _shard_failures(response)
        if failure:
            raise VectorIndexError(f"OpenSearch {operation} on {name!r} is incomplete: "
                                   f"{failure}")
        return response["hits"]["hits"]

    def live_documents(self, name: str) -> set[str]:
        composite: dict[str, Any] = {"size": LIVE_PAGE,
                                     "sources": [{"doc_id": {"terms": {"field": "doc_id"}}}]}
        body = {"size": 0, "track_total_hits": False, "aggs": {"docs": {"composite": composite}}}
        live: set[str] = set()
        while True:
            with self._failing("list live documents", name):
                found = self.client.search(index=name, body=body)
            failure = _shard_failures(found)
            if failure:
                raise VectorIndexError(f"OpenSearch list live documents on {name!r} is "
                                       f"incomplete: {failure}")
            page = found["aggregations"]["docs"]
            live.update(bucket["key"]["doc_id"] for bucket in page["buckets"])
            if len(page["buckets"]) < LIVE_PAGE or "after_key" not in page:
                return live
            composite["after"] = page["after_key"]

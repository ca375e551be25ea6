"""knowledge_rebuild: the labelled questions, the gate on the real local engine (LanceDB) and
the DAG end to end through ``airflow dags test``.

The corpus is what the generator writes by default (``Knobs()``): the 20 policy documents
(5 topics x 4 languages) and 40 merchant help pages, the documents the labelled questions are
written against (``rebuild.labelled_corpus``). The hashing model stands in where model
quality does not matter; the acceptance test uses MiniLM for real, because the point there is
that the gate tells a good model from a bad one on the questions kept in the repository.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import uuid

import numpy as np
import orjson
import pytest
import yaml

from mercury.config import REPO_ROOT
from mercury.generator.documents import LANGUAGES, POLICY_TOPICS, build_documents, render
from mercury.generator.knobs import Knobs
from mercury.generator.world import build_world
from mercury.retrieval.chunking import ChunkingSpec
from mercury.retrieval.embedding import HashingEmbedder
from mercury.retrieval.rebuild import (
    QUERIES_PATH,
    Evaluation,
    evaluate,
    labelled_corpus,
    load_queries,
)
from tests.airflow_fixtures import dags_test
from tests.test_dags import dagbag  # noqa: F401 - the fixture, parsed with Airflow's settings

MERCHANT_DOCS = 40
POLICY_IDS = {f"policy-{topic}-{lang}" for topic in POLICY_TOPICS for lang in LANGUAGES}
T0 = 1_795_000_000_000  # 2026-11-18: the DAG run time a candidate's name is made from


def change(spec, updated_at: int, op: str = "UPSERT") -> dict:
    """A knowledge_document_change for a generated document (rendered as first published)."""
    rng = random.Random(f"{spec.doc_id}{updated_at}{op}")
    return {"change_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "doc_id": spec.doc_id, "op": op, "doc_type": spec.doc_type,
            "source_url": spec.source_url, "title": None if op == "DELETE" else spec.title,
            "body": None if op == "DELETE" else render(spec, 0), "language": spec.language,
            "merchant_id": spec.merchant_id, "updated_at": updated_at, "ingest_ts": updated_at}


def corpus_specs():
    """The generator's default documents (policies first, then merchant pages) and one spare
    merchant page: the first 60 are the labelled corpus, drawn in the same order."""
    knobs = Knobs()
    rng = random.Random(knobs.seed)
    world = build_world(rng, knobs.users, knobs.merchants)
    return build_documents(rng, world.merchants, len(POLICY_IDS) + MERCHANT_DOCS + 1)


def send(settings, records: list[dict]) -> None:
    from mercury.eventlog import open_producer

    with open_producer(settings, writer_id=f"t{uuid.uuid4().hex[:6]}") as producer:
        for record in records:
            producer.send("knowledge_documents", orjson.dumps(record), key=record["doc_id"])


@pytest.fixture(scope="module")
def knowledge():
    """The DAG's glue module, imported the way the DAG does (Airflow puts the plugins folder
    on sys.path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO_ROOT / "plugins"))
        yield importlib.import_module("mercury_airflow.tasks.knowledge_rebuild")


@pytest.fixture
def corpus(tmp_settings):
    """60 documents in the event log; returns the spare merchant page, not yet sent."""
    *specs, spare = corpus_specs()
    send(tmp_settings, [change(spec, T0 - 1000 - i) for i, spec in enumerate(specs)])
    return specs, spare


@pytest.fixture
def index(tmp_settings):
    from mercury.retrieval.local_index import LocalVectorIndex

    opened = LocalVectorIndex(tmp_settings.retrieval.index)
    yield opened
    opened.close()


def quiet(_line: str) -> None:
    return None


def rebuild_steps(knowledge, settings, index, model: str, chunking: ChunkingSpec,
                  created_at_ms: int, log=quiet):
    """What the DAG's tasks do, in order, without Airflow: (version, evaluations, decision)."""
    version = knowledge.build_candidate(settings, model, chunking, created_at_ms, index=index,
                                        log=log)["version"]
    evaluations = knowledge.evaluate_candidate(settings, version, index=index, log=log)
    return version, evaluations, knowledge.decide_swap(evaluations)


def state_of(index, alias: str, name: str) -> str:
    return next(v for v in index.versions(alias) if v.name == name).state


# ---- the labelled questions ------------------------------------------------------------------


def test_the_labelled_questions_name_real_documents_in_every_language():
    raw = yaml.safe_load(QUERIES_PATH.read_text())["questions"]
    queries = load_queries()
    documents = {d.doc_id: d for d in labelled_corpus()}
    merchants = {m.merchant_id: m.name for m in build_world(
        random.Random(Knobs().seed), Knobs().users, Knobs().merchants).merchants}
    assert len(queries) >= 200 and set(raw) == set(LANGUAGES)
    problems = []
    for query in queries:
        for doc_id in query.relevant:
            doc = documents.get(doc_id)
            if doc is None:
                problems.append(f"{query.question!r}: {doc_id} is no generated document")
                continue
            if query.filters.language not in (None, doc.language):
                problems.append(f"{query.question!r}: the language filter excludes {doc_id}")
            if query.filters.doc_type not in (None, doc.doc_type):
                problems.append(f"{query.question!r}: the doc_type filter excludes {doc_id}")
            # A merchant question names its merchant: a generator whose world changed (other
            # names, other ids) fails here, not as a quietly lower recall.
            named = query.question.lower()
            if doc.merchant_id and merchants[doc.merchant_id].lower() not in named:
                problems.append(f"{query.question!r}: does not name "
                                f"{merchants[doc.merchant_id]} ({doc_id})")
    assert not problems, "\n".join(problems)
    assert all(set(q) <= {"question", "relevant", "filters"} for qs in raw.values() for q in qs)
    # At least 50 questions per language, each language asking about both document types.
    for language in LANGUAGES:
        asked = [q for q in queries if q.language == language]
        assert len(asked) >= 50, language
        assert {documents[d].doc_type for q in asked for d in q.relevant} == {
            "CARD_POLICY", "MERCHANT_HELP"}, language
    # Most questions leave the language to the model; some carry a document-type filter.
    assert sum(q.filters.language is None for q in queries) >= 0.8 * len(queries)
    assert sum(q.filters.doc_type is not None for q in queries) >= 20
    labelled = {doc_id for q in queries for doc_id in q.relevant}
    policies = {d for d in labelled if d.startswith("policy-")}
    assert policies == POLICY_IDS  # every topic in every language
    assert len(labelled - policies) >= 30  # most merchant pages
    # Paraphrased: no question repeats a document's title.
    titles = {d.title.lower() for d in documents.values()}
    assert not [q.question for q in queries if any(t in q.question.lower() for t in titles)]


# ---- the gate on the local engine ----------------------------------------------------------


def test_the_first_candidate_swaps_when_nothing_serves(knowledge, tmp_settings, corpus,
                                                         index):
    alias = tmp_settings.retrieval.alias
    lines: list[str] = []
    version, evaluations, decision = rebuild_steps(knowledge, tmp_settings, index, "hashing-384",
                                                   ChunkingSpec(200, 32), T0, log=lines.append)
    assert evaluations["serving"] is None
    candidate = evaluations["candidate"]
    assert candidate["parity"] and candidate["live_documents"] == 60
    assert candidate["source_documents"] == 60 and candidate["queries"] == len(load_queries())
    # Judged on the grown set, per language asked in; the version searches hybrid, so even
    # the word-hashing model finds the merchant pages by name.
    by_language = candidate["by_language"]
    assert {lang: by_language[lang]["queries"] for lang in by_language} == {
        "en": 63, "fr": 52, "de": 50, "es": 50}
    assert all(0 < r["recall_at_5"] <= 1 and 0 < r["mrr"] <= 1 for r in by_language.values())
    assert decision.swap and "no version serves yet" in decision.reasons[0]
    assert any(line.startswith("  60 documents: 60 written") for line in lines), lines

    result = knowledge.swap_to(tmp_settings, version, index=index, log=lines.append)
    assert result == {"alias": alias, "target": version, "previous": None, "retired": []}
    assert index.alias_target(alias) == version and state_of(index, alias, version) == "ready"


def test_a_candidate_missing_a_live_document_or_keeping_a_deleted_one_is_refused(
        knowledge, tmp_settings, corpus, index):
    """Document parity: the candidate must hold exactly the stream's live documents."""
    specs, spare = corpus
    alias = tmp_settings.retrieval.alias
    v1, _, _ = rebuild_steps(knowledge, tmp_settings, index, "hashing-384",
                             ChunkingSpec(200, 32), T0)
    knowledge.swap_to(tmp_settings, v1, index=index, log=quiet)
    v2 = knowledge.build_candidate(tmp_settings, "hashing-384", ChunkingSpec(128, 32),
                                   T0 + 1000, index=index, log=quiet)["version"]
    # Two changes the candidate never received (as if it had been built from a stale copy).
    deleted = specs[-1]
    send(tmp_settings, [change(spare, T0 + 5000), change(deleted, T0 + 5000, op="DELETE")])

    evaluations = knowledge.evaluate_candidate(tmp_settings, v2, index=index, log=quiet)
    candidate = evaluations["candidate"]
    assert (candidate["missing"], candidate["extra"]) == ([spare.doc_id], [deleted.doc_id])
    assert not candidate["parity"] and candidate["source_documents"] == 60
    decision = knowledge.decide_swap(evaluations)
    assert not decision.swap
    assert [r for r in decision.reasons if r.startswith("document parity fails: 1 live documents "
                                                        f"missing (e.g. ['{spare.doc_id}'])")]
    assert f"1 that should not be there (e.g. ['{deleted.doc_id}'])" in decision.reasons[0]

    result = knowledge.refuse_candidate(tmp_settings, v2, list(decision.reasons), index=index,
                                        log=quiet)
    assert result["target"] == v1 == index.alias_target(alias)
    assert state_of(index, alias, v2) == "retired" and state_of(index, alias, v1) == "ready"


class ScrambledModel(HashingEmbedder):
    """A stand-in for another model under MiniLM's name: vectors that ignore meaning."""

    name = "all-MiniLM-L6-v2"

    @property
    def version(self) -> str:
        return "scrambled-1"

    def embed(self, texts):
        seeds = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "little")
                 for t in texts]
        rows = [np.random.default_rng(seed).normal(size=384) for seed in seeds]
        out = np.asarray(rows, dtype=np.float32).reshape(len(texts), 384)
        return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-9)


@pytest.fixture
def two_models(knowledge, monkeypatch):
    """hashing-384 and the scrambled stand-in; records which model each call asked for."""
    models = {"hashing-384": HashingEmbedder(), "all-MiniLM-L6-v2": ScrambledModel()}
    asked: list[str] = []

    def loaded(name: str, batch_size: int):
        asked.append(name)
        return models[name]

    monkeypatch.setattr(knowledge, "_loaded_embedder", loaded)
    return models, asked


def test_a_worse_candidate_is_refused_and_each_version_is_queried_with_its_own_model(
        knowledge, tmp_settings, corpus, index, two_models):
    models, asked = two_models
    alias = tmp_settings.retrieval.alias
    v1, _, _ = rebuild_steps(knowledge, tmp_settings, index, "hashing-384",
                             ChunkingSpec(200, 32), T0)
    knowledge.swap_to(tmp_settings, v1, index=index, log=quiet)
    asked.clear()

    v2, evaluations, decision = rebuild_steps(knowledge, tmp_settings, index, "all-MiniLM-L6-v2",
                                              ChunkingSpec(200, 32), T0 + 1000)
    # build with the candidate's model; evaluate the candidate with it, the serving with its own
    assert asked == ["all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "hashing-384"]
    serving_spec = knowledge.find_version(index, alias, v1)
    direct = evaluate(index, serving_spec, HashingEmbedder(), load_queries(),
                      {s.doc_id for s in corpus[0]})
    assert evaluations["serving"] == knowledge.as_plain(direct)
    candidate, serving = evaluations["candidate"], evaluations["serving"]
    assert candidate["parity"] and candidate["recall_at_5"] < serving["recall_at_5"]
    assert not decision.swap
    assert decision.reasons == (
        f"recall@5 {candidate['recall_at_5']} < serving {serving['recall_at_5']}",
        f"MRR {candidate['mrr']} < serving {serving['mrr']}")
    knowledge.refuse_candidate(tmp_settings, v2, list(decision.reasons), index=index, log=quiet)
    assert index.alias_target(alias) == v1


def test_a_version_cannot_be_evaluated_with_other_weights_under_its_model_name(
        knowledge, tmp_settings, corpus, index, two_models, monkeypatch):
    from mercury.retrieval.index import VectorIndexError

    models, _ = two_models
    v1 = knowledge.build_candidate(tmp_settings, "all-MiniLM-L6-v2", ChunkingSpec(200, 32), T0,
                                   index=index, log=quiet)["version"]
    monkeypatch.setattr(ScrambledModel, "version", property(lambda self: "scrambled-2"))
    with pytest.raises(VectorIndexError, match=r"built with all-MiniLM-L6-v2@scrambled-1 but "
                                               r"this worker has all-MiniLM-L6-v2@scrambled-2"):
        knowledge.evaluate_candidate(tmp_settings, v1, index=index, log=quiet)


def test_a_candidate_as_good_swaps_keeps_the_previous_ready_and_rollback_serves_it_again(
        knowledge, tmp_settings, corpus, index):
    alias = tmp_settings.retrieval.alias
    v1, _, _ = rebuild_steps(knowledge, tmp_settings, index, "hashing-384",
                             ChunkingSpec(200, 32), T0)
    knowledge.swap_to(tmp_settings, v1, index=index, log=quiet)
    v2, evaluations, decision = rebuild_steps(knowledge, tmp_settings, index, "hashing-384",
                                              ChunkingSpec(128, 32), T0 + 1000)
    candidate, serving = evaluations["candidate"], evaluations["serving"]
    assert (candidate["recall_at_5"], candidate["mrr"]) == (serving["recall_at_5"],
                                                            serving["mrr"])
    assert decision.swap and decision.reasons[0].startswith("parity 60 documents; recall@5 ")
    assert knowledge.swap_to(tmp_settings, v2, index=index, log=quiet)["previous"] == v1
    assert state_of(index, alias, v1) == "ready"

    lines: list[str] = []
    assert knowledge.roll_back(tmp_settings, index=index, log=lines.append) == {
        "alias": alias, "target": v1, "previous": v2}
    assert index.alias_target(alias) == v1 and lines == [f"rolled back: alias {alias} -> {v1} "
                                                         f"(was {v2})"]
    # Both stay maintained: rolling forward again is one swap away.
    assert {v.name: v.state for v in index.versions(alias)} == {v1: "ready", v2: "ready"}


def test_rollback_never_serves_a_retired_version(knowledge, tmp_settings, corpus, index):
    from mercury.retrieval.index import VectorIndexError

    alias = tmp_settings.retrieval.alias
    names = []
    for i, tokens in enumerate((200, 128, 96)):
        version, _, decision = rebuild_steps(knowledge, tmp_settings, index, "hashing-384",
                                             ChunkingSpec(tokens, 32), T0 + 1000 * i)
        assert decision.swap
        knowledge.swap_to(tmp_settings, version, index=index, log=quiet)
        names.append(version)
    v1, v2, v3 = names
    assert {v.name: v.state for v in index.versions(alias)} == {v1: "retired", v2: "ready",
                                                                v3: "ready"}
    knowledge.roll_back(tmp_settings, index=index, log=quiet)
    assert index.alias_target(alias) == v2
    # The alias history holds v1 before v2, but v1 was retired by v3's swap: not maintained
    # since, so its documents may be stale. The rollback refuses and leaves the alias alone.
    with pytest.raises(VectorIndexError, match=f"would serve {v1}, which is retired"):
        knowledge.roll_back(tmp_settings, index=index, log=quiet)
    assert index.alias_target(alias) == v2


def test_a_retried_build_resumes_its_version_and_abandon_retires_only_what_does_not_serve(
        knowledge, tmp_settings, corpus, index):
    alias = tmp_settings.retrieval.alias
    first = knowledge.build_candidate(tmp_settings, "hashing-384", ChunkingSpec(200, 32), T0,
                                      index=index, log=quiet)
    again = knowledge.build_candidate(tmp_settings, "hashing-384", ChunkingSpec(200, 32), T0,
                                      index=index, log=quiet)
    assert again["version"] == first["version"] == knowledge.candidate_name(
        tmp_settings, "hashing-384", ChunkingSpec(200, 32), T0)
    assert (first["applied"], again["applied"], again["chunks_embedded"]) == (60, 0, 0)
    assert [v.name for v in index.versions(alias)] == [first["version"]]

    serving = first["version"]
    knowledge.swap_to(tmp_settings, serving, index=index, log=quiet)
    assert knowledge.abandon_candidate(tmp_settings, serving, index=index, log=quiet) is None
    assert state_of(index, alias, serving) == "ready"
    stuck = knowledge.build_candidate(tmp_settings, "hashing-384", ChunkingSpec(128, 32),
                                      T0 + 1000, index=index, log=quiet)["version"]
    assert state_of(index, alias, stuck) == "building"
    assert knowledge.abandon_candidate(tmp_settings, stuck, index=index, log=quiet) == stuck
    assert state_of(index, alias, stuck) == "retired" and index.alias_target(alias) == serving
    assert knowledge.abandon_candidate(tmp_settings, "no-such-version", index=index,
                                       log=quiet) is None


def _evaluation(version: str, recall: float, mrr: float, missing=(), extra=()) -> dict:
    return Evaluation(version, recall, mrr, 40, 60 - len(missing) + len(extra), 60,
                      tuple(missing), tuple(extra)).as_dict()


@pytest.mark.parametrize(("candidate", "swap", "reasons"), [
    ((0.8, 0.6), True, ["parity 60 documents; recall@5 0.8 >= 0.8, MRR 0.6 >= 0.6"]),
    ((0.9, 0.7), True, ["parity 60 documents; recall@5 0.9 >= 0.8, MRR 0.7 >= 0.6"]),
    ((0.7, 0.6), False, ["recall@5 0.7 < serving 0.8"]),
    ((0.9, 0.5), False, ["MRR 0.5 < serving 0.6"]),
    ((0.4, 0.3), False, ["recall@5 0.4 < serving 0.8", "MRR 0.3 < serving 0.6"]),
])
def test_the_gate_needs_both_measures_at_least_the_serving_ones(knowledge, candidate, swap,
                                                                 reasons):
    decision = knowledge.decide_swap({"candidate": _evaluation("new", *candidate),
                                      "serving": _evaluation("old", 0.8, 0.6)})
    assert (decision.swap, list(decision.reasons)) == (swap, reasons)


def test_the_gate_checks_parity_even_when_nothing_serves(knowledge):
    decision = knowledge.decide_swap({"candidate": _evaluation("new", 1.0, 1.0, missing=["a"]),
                                      "serving": None})
    assert not decision.swap and decision.reasons[0].startswith("document parity fails")


# ---- the DAG -------------------------------------------------------------------------------


def test_the_dag_branches_on_the_action_and_on_the_gate(dagbag):  # noqa: F811
    from airflow.sdk import TriggerRule

    dag = dagbag.dags["knowledge_rebuild"]
    assert dag.schedule is None and dag.max_active_runs == 1
    assert dag.params.get_param("embedding_model").schema["enum"] == ["all-MiniLM-L6-v2",
                                                                      "hashing-384"]
    assert dag.params.get_param("action").schema["enum"] == ["rebuild", "rollback"]
    choose = dag.get_task("choose")
    assert [choose.python_callable(params={"action": a}) for a in ("rebuild", "rollback")] == [
        "build", "rollback"]
    assert choose.downstream_task_ids == {"build", "rollback"}
    assert dag.get_task("decide").downstream_task_ids == {"swap", "refuse", "abandon"}
    assert dag.get_task("evaluate").upstream_task_ids == {"build"}
    abandon = dag.get_task("abandon")
    assert abandon.trigger_rule == TriggerRule.ONE_FAILED
    assert abandon.upstream_task_ids == {"build", "evaluate", "decide", "swap"}


@pytest.mark.slow
def test_knowledge_rebuild_dag_swaps_refuses_a_worse_model_and_rolls_back(tmp_settings,
                                                                          corpus, tmp_path,
                                                                          airflow_home,
                                                                          warm_airflow):
    """`airflow dags test knowledge_rebuild`, four runs on one index:
    MiniLM (nothing serves: swap), hashing-384 (worse: refused, the alias stays),
    MiniLM with 128-token chunks (as good: swap), rollback (back to the first)."""
    from mercury.retrieval.local_index import LocalVectorIndex
    from mercury.stack.airflow_standalone import airflow_binary, airflow_env
    from mercury.stack.base import StackError

    try:
        binary = airflow_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    alias = tmp_settings.retrieval.alias
    # MERCURY_CONFIG (set by tmp_settings) points the DAG's tasks at this test's folders.
    env = {**os.environ, **airflow_env(tmp_settings, home=airflow_home(tmp_path / "airflow"))}
    # One Airflow process for the four runs: Airflow, torch and MiniLM load once, not thrice.
    airflow = warm_airflow(binary, env, cwd=tmp_path, log_dir=tmp_path)

    def trigger(conf: dict) -> str:
        run = airflow.run(*dags_test("knowledge_rebuild", "-c", orjson.dumps(conf).decode()),
                          timeout=300)
        output = run.stdout
        assert run.returncode == 0 and "state=success" in output, output[-5000:]
        return output

    def serving() -> tuple[str | None, dict[str, str]]:
        index = LocalVectorIndex(tmp_settings.retrieval.index)
        try:
            return index.alias_target(alias), {v.name: v.state for v in index.versions(alias)}
        finally:
            index.close()

    output = trigger({"embedding_model": "all-MiniLM-L6-v2"})
    v1, states = serving()
    assert v1 is not None and "-all-minilm-l6-v2-sections-t200-o32-" in v1, output[-3000:]
    assert states == {v1: "ready"}
    assert f"decision: SWAP {v1}" in output and "no version serves yet" in output
    assert f"swapped: alias {alias} -> {v1} (was nothing)" in output

    output = trigger({"embedding_model": "hashing-384"})
    target, states = serving()
    assert target == v1, output[-3000:]
    [v2] = [name for name in states if "-hashing-384-" in name]
    assert states == {v1: "ready", v2: "retired"}
    assert f"decision: REFUSE {v2}" in output
    assert f"REFUSED {v2}: recall@5 " in output and " < serving " in output
    assert "MRR " in output.split(f"REFUSED {v2}:")[1].splitlines()[0]
    assert f"still -> {v1}" in output

    output = trigger({"embedding_model": "all-MiniLM-L6-v2", "max_tokens": 128})
    v3, states = serving()
    assert v3 not in (v1, v2) and "-all-minilm-l6-v2-sections-t128-o32-" in v3, output[-3000:]
    assert states == {v1: "ready", v2: "retired", v3: "ready"}
    assert f"decision: SWAP {v3}" in output and f"swapped: alias {alias} -> {v3}" in output

    output = trigger({"action": "rollback"})
    target, states = serving()
    assert target == v1, output[-3000:]
    assert f"rolled back: alias {alias} -> {v1} (was {v3})" in output
    assert states == {v1: "ready", v2: "retired", v3: "ready"}

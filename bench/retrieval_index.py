"""The local vector index (LanceDB) at 100K chunks: upserts, index build, filtered kNN latency
and recall against exact search.

Data: ``--chunks`` chunks (default 100,000) of ``--chunks-per-doc`` chunks per document, with
random clustered unit vectors: ``--centroids`` topic centroids (default 2,000), a document
vector near its topic, its chunks near the document. Filter fields as in production: four
languages (en 55%, fr/de/es 15% each), two doc types (10% CARD_POLICY without a merchant, 90%
MERCHANT_HELP for one of ``--merchants`` merchants, 5,000 by default), passages of 300-700
characters of generated help text.

1. Upserts: ``LocalVectorIndex.write`` in calls of ``--docs-per-call`` documents (500 x 5 =
   2,500 chunks), each with its ledger entry, exactly as ``DocumentApplier`` calls it;
   chunks/s per call and overall. Then a steady-state phase after the index build:
   ``--update-docs`` (5,000) existing documents replaced in calls of the same size (new
   chunks, old ones removed in the same commit), on the full table, and optimize again.
2. Index build: the explicit optimize / ANN build of the version, timed on its own.
   Before it, ``--flat-queries`` per filter kind on the unindexed table (the engine's exact
   search), to show what the ANN index buys.
3. Queries, ``--queries`` per filter kind (language; language + doc_type; merchant_id), k=5:
   - the engine's ``search`` latency, query vector given (embedding EXCLUDED);
   - exact search in numpy over the same filtered rows (filter mask on integer codes, a
     matrix-vector product over the matching rows, or over all rows then masked when more
     than a quarter match, a partial sort): the brute-force baseline, in memory;
   - recall@5 of the engine against that exact top 5 (same filter);
   - hybrid ``search`` (the retriever's path since hybrid retrieval): the same query vector
     with a real question string's words, kNN and full text over the per-language analysed
     columns fused by RRF, embedding EXCLUDED;
   - hybrid ``search`` with the query embedding INCLUDED: the question embedded by
     all-MiniLM-L6-v2 in this process (one call per question, no cache), then searched with
     its words.
4. Single-document upserts (what the indexer writes when changes trickle in), ``optimize_every``
   of them after the last optimize: the last one reaches the threshold and triggers optimize;
   its duration is what the change that triggers it waits (an engine that optimizes in the
   background returns at once: then the time until that optimize ends is printed too).

5. Changes trickling in through a background optimize (engines that optimize off the write
   path): ``--trickle-burst-docs`` (5,000) documents replaced in calls of 500 (a bulk
   re-publish; no optimize after it), then one single-document upsert every
   ``--trickle-interval-s`` (0.5 s) until the
   optimize triggered by the ``optimize_every``-th of them has ended; write latency, how long
   the optimize ran, whether it committed or gave up (the engine logs a warning), and the
   fragments and rows outside the vector index before and after (LanceDB statistics).

Results go to ``bench/results/retrieval_index.json``.
Usage: python bench/retrieval_index.py [--chunks 100000] [--queries 500] [--ann-min-rows N]
       [--optimize-every N] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mercury.config import LocalVectorConfig  # noqa: E402
from mercury.generator.documents import DECLINE_EXPLANATIONS, FILLER  # noqa: E402
from mercury.retrieval.index import (  # noqa: E402
    ChunkRow,
    DocumentWrite,
    LedgerEntry,
    SearchFilter,
    VersionSpec,
)

RESULTS = REPO / "bench" / "results" / "retrieval_index.json"
DIM = 384
K = 5
LANGUAGES = ("en", "fr", "de", "es")
LANGUAGE_WEIGHTS = (0.55, 0.15, 0.15, 0.15)
DOC_TYPES = ("CARD_POLICY", "MERCHANT_HELP")
QUESTIONS = ("Why was my card declined at {m}?", "How long does a refund from {m} take?",
             "How do I dispute a charge from {m}?", "What fee applies when I pay {m} abroad?",
             "Can I pay {m} in installments?", "How does a charge from {m} appear?",
             "Pourquoi ma carte a-t-elle été refusée chez {m} ?",
             "Warum wurde meine Karte bei {m} abgelehnt?",
             "¿Cuánto tarda un reembolso de {m}?")


def percentiles(samples_s: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples_s)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ms[-1], 3),
            "mean": round(statistics.fmean(ms), 3), "n": len(ms)}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class Corpus:
    """Documents, their filter fields (as integer codes too, for numpy) and chunk vectors."""

    def __init__(self, chunks: int, per_doc: int, centroids: int, merchants: int, seed: int):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.per_doc = per_doc
        self.docs = chunks // per_doc
        self.centroids = unit(rng.standard_normal((centroids, DIM)))
        self.topic = rng.integers(0, centroids, self.docs)
        self.language = rng.choice(len(LANGUAGES), self.docs, p=LANGUAGE_WEIGHTS).astype(np.int8)
        self.doc_type = (rng.random(self.docs) >= 0.10).astype(np.int8)  # 1 = MERCHANT_HELP
        self.merchant = np.where(self.doc_type == 1, rng.integers(0, merchants, self.docs), -1)
        self.merchant_ids = [f"mch_{i:012x}" for i in range(merchants)]
        doc_vectors = unit(self.centroids[self.topic]
                           + rng.standard_normal((self.docs, DIM)) * (0.5 / np.sqrt(DIM)))
        self.doc_vectors = doc_vectors
        self.generation = np.zeros(self.docs, dtype=np.int64)
        sentences = list(DECLINE_EXPLANATIONS.values()) + list(FILLER)
        self.texts = [" ".join(random.Random(i).choices(sentences, k=random.Random(-i)
                                                         .randint(6, 12)))
                      for i in range(64)]

    def chunk_vectors(self, doc: int, generation: int) -> np.ndarray:
        rng = np.random.default_rng((doc, generation))
        noise = rng.standard_normal((self.per_doc, DIM)) * (0.4 / np.sqrt(DIM))
        return unit(self.doc_vectors[doc] + noise)

    def doc_id(self, doc: int) -> str:
        kind = "policy" if self.doc_type[doc] == 0 else "merchant"
        return f"{kind}-{doc:07d}"

    def write(self, doc: int, generation: int, updated_at: int) -> DocumentWrite:
        doc_id = self.doc_id(doc)
        language = LANGUAGES[self.language[doc]]
        merchant = None if self.merchant[doc] < 0 else self.merchant_ids[self.merchant[doc]]
        vectors = self.chunk_vectors(doc, generation)
        rows = []
        for position in range(self.per_doc):
            chunk_id = f"{doc_id}:{position}:{generation:08x}{position:08x}"
            rows.append(ChunkRow(
                chunk_id=chunk_id, doc_id=doc_id, position=position,
                doc_type=DOC_TYPES[self.doc_type[doc]], language=language,
                merchant_id=merchant, title=f"Help page {doc}", heading=f"Section {position}",
                source_url=f"https://help.mercurypay.example/{language}/{doc_id}",
                text=self.texts[(doc + position) % len(self.texts)], updated_at=updated_at,
                vector=vectors[position]))
        entry = LedgerEntry(doc_id, (updated_at, 0, f"chg-{doc}-{generation}"), False,
                            tuple(r.chunk_id for r in rows))
        return DocumentWrite(entry, rows)


class Exact:
    """Brute force over the chunks as the index holds them, on integer filter codes."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        docs = np.arange(corpus.docs)
        self.doc = np.repeat(docs, corpus.per_doc)
        self.language = np.repeat(corpus.language, corpus.per_doc)
        self.doc_type = np.repeat(corpus.doc_type, corpus.per_doc)
        self.merchant = np.repeat(corpus.merchant, corpus.per_doc)
        self.position = np.tile(np.arange(corpus.per_doc), corpus.docs)
        self.vectors = np.empty((corpus.docs * corpus.per_doc, DIM), dtype=np.float32)
        for d in docs:
            self.refresh(d)

    def refresh(self, doc: int) -> None:
        start = doc * self.corpus.per_doc
        self.vectors[start:start + self.corpus.per_doc] = self.corpus.chunk_vectors(
            doc, int(self.corpus.generation[doc]))

    def chunk_id(self, row: int) -> str:
        doc = int(self.doc[row])
        return (f"{self.corpus.doc_id(doc)}:{self.position[row]}:"
                f"{int(self.corpus.generation[doc]):08x}{int(self.position[row]):08x}")

    def search(self, vector: np.ndarray, codes: dict) -> tuple[list[int], int]:
        mask = np.ones(len(self.vectors), dtype=bool)
        if "language" in codes:
            mask &= self.language == codes["language"]
        if "doc_type" in codes:
            mask &= self.doc_type == codes["doc_type"]
        if "merchant" in codes:
            mask &= self.merchant == codes["merchant"]
        rows = np.flatnonzero(mask)
        if len(rows) > len(self.vectors) // 4:
            # a broad filter: scoring every row beats copying most of the matrix out
            scores = np.where(mask, self.vectors @ vector, -np.inf)[rows]
        else:
            scores = self.vectors[rows] @ vector
        k = min(K, len(rows))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top])]
        return rows[top].tolist(), len(rows)


def make_queries(corpus: Corpus, n: int, seed: int) -> dict[str, list[tuple]]:
    """Per filter kind: (query vector, SearchFilter, integer codes) near a random live doc's
    topic, with a filter that the doc itself matches (so no filter is empty)."""
    rng = np.random.default_rng(seed)
    merchant_docs = np.flatnonzero(corpus.merchant >= 0)
    out: dict[str, list[tuple]] = {"language": [], "language+doc_type": [], "merchant_id": []}
    for kind in out:
        for _ in range(n):
            doc = int(rng.choice(merchant_docs) if kind == "merchant_id"
                      else rng.integers(0, corpus.docs))
            vector = unit((corpus.centroids[corpus.topic[doc]]
                           + rng.standard_normal(DIM) * (1.0 / np.sqrt(DIM)))[None, :])[0]
            language = int(corpus.language[doc])
            if kind == "language":
                codes = {"language": language}
                filters = SearchFilter(language=LANGUAGES[language])
            elif kind == "language+doc_type":
                codes = {"language": language, "doc_type": int(corpus.doc_type[doc])}
                filters = SearchFilter(language=LANGUAGES[language],
                                       doc_type=DOC_TYPES[corpus.doc_type[doc]])
            else:
                codes = {"merchant": int(corpus.merchant[doc])}
                filters = SearchFilter(merchant_id=corpus.merchant_ids[corpus.merchant[doc]])
            out[kind].append((vector, filters, codes))
    return out


def timed_writes(index, name: str, corpus: Corpus, docs: list[int], per_call: int,
                 label: str, clock_ms: list[int]) -> dict:
    calls, total_rows = [], 0
    started = time.perf_counter()
    for start in range(0, len(docs), per_call):
        batch = docs[start:start + per_call]
        clock_ms[0] += 1
        writes = [corpus.write(d, int(corpus.generation[d]), clock_ms[0]) for d in batch]
        rows = sum(len(w.rows) for w in writes)
        t0 = time.perf_counter()
        index.write(name, writes)
        calls.append(time.perf_counter() - t0)
        total_rows += rows
        elapsed = time.perf_counter() - started
        print(f"  {label}: {total_rows:>8,} chunks  last call {calls[-1]:6.2f} s "
              f"({rows / calls[-1]:7,.0f} chunks/s)  overall {total_rows / sum(calls):7,.0f} "
              f"chunks/s in write, {elapsed:6.1f} s wall", flush=True)
    write_s = sum(calls)
    return {"chunks": total_rows, "documents": len(docs), "calls": len(calls),
            "chunks_per_call": total_rows // max(1, len(calls)),
            "write_seconds": round(write_s, 2),
            "chunks_per_s": round(total_rows / write_s),
            "documents_per_s": round(len(docs) / write_s),
            "call_seconds": percentiles(calls)}


def measure_search(index, name: str, exact: Exact, queries: dict, embedder, questions: list[str]
                   ) -> dict:
    out = {}
    for kind, items in queries.items():
        for vector, filters, _ in items[:20]:  # warm up the engine's caches and code paths
            index.search(name, vector, K, filters)
        engine, brute, recalls, sizes, fused = [], [], [], [], []
        offset = list(queries).index(kind) * len(items)
        for i, (vector, filters, codes) in enumerate(items):
            t0 = time.perf_counter()
            hits = index.search(name, vector, K, filters)
            engine.append(time.perf_counter() - t0)
            if questions:
                question = questions[(offset + i) % len(questions)]
                t0 = time.perf_counter()
                index.search(name, vector, K, filters, text=question)
                fused.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows, size = exact.search(vector, codes)
            brute.append(time.perf_counter() - t0)
            truth = {exact.chunk_id(r) for r in rows}
            found = {h.chunk_id for h in hits}
            if truth:
                recalls.append(len(truth & found) / len(truth))
            sizes.append(size)
        with_embedding = []
        for i, (_, filters, _) in enumerate(items if embedder is not None else []):
            question = questions[(offset + i) % len(questions)]  # all distinct: no cache hit
            t0 = time.perf_counter()
            vector = embedder.embed([question])[0]
            index.search(name, vector, K, filters, text=question)
            with_embedding.append(time.perf_counter() - t0)
        out[kind] = {"engine_ms": percentiles(engine), "exact_numpy_ms": percentiles(brute),
                     "hybrid_ms": percentiles(fused) if fused else None,
                     "hybrid_with_embedding_ms": (percentiles(with_embedding)
                                                  if with_embedding else None),
                     f"recall_at_{K}": round(statistics.fmean(recalls), 4),
                     "queries": len(items),
                     "filtered_rows": {"p50": int(statistics.median(sizes)), "min": min(sizes),
                                       "max": max(sizes)}}
        r = out[kind]
        w, h = r["hybrid_with_embedding_ms"], r["hybrid_ms"]
        embedded = (f"hybrid p50 {h['p50']:.1f} p95 {h['p95']:.1f}; " if h else "") + (
            f"hybrid with embedding p50 {w['p50']:.1f} p95 {w['p95']:.1f}; " if w else "")
        print(f"  {kind:<18} engine p50 {r['engine_ms']['p50']:.2f} ms p95 "
              f"{r['engine_ms']['p95']:.2f}; exact p50 {r['exact_numpy_ms']['p50']:.2f} p95 "
              f"{r['exact_numpy_ms']['p95']:.2f}; {embedded}recall@{K} {r[f'recall_at_{K}']}",
              flush=True)
    return out


def questions_for(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ("Corner", "Blue", "Sunny", "Metro", "Harbor", "Alpine", "Golden", "River")
    kinds = ("Cafe", "Books", "Market", "Travel", "Pharmacy", "Garage", "Bistro", "Cinema")
    out, seen = [], set()
    while len(out) < n:
        q = rng.choice(QUESTIONS).format(m=f"{rng.choice(words)} {rng.choice(kinds)} "
                                           f"{rng.randrange(1000)}")
        if q not in seen:
            seen.add(q)
            out.append(q)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--chunks-per-doc", type=int, default=5)
    parser.add_argument("--docs-per-call", type=int, default=500)
    parser.add_argument("--centroids", type=int, default=2_000)
    parser.add_argument("--merchants", type=int, default=5_000)
    parser.add_argument("--queries", type=int, default=500, help="per filter kind")
    parser.add_argument("--flat-queries", type=int, default=100,
                        help="per filter kind, before the first optimize (exact in the engine)")
    parser.add_argument("--update-docs", type=int, default=5_000,
                        help="documents replaced in the steady-state upsert phase")
    parser.add_argument("--ann-min-rows", type=int, default=None,
                        help="default: LocalVectorConfig's")
    parser.add_argument("--optimize-every", type=int, default=None,
                        help="default: LocalVectorConfig's")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads for the query embedding (default torch's)")
    parser.add_argument("--trickle-interval-s", type=float, default=0.5,
                        help="phase 6: seconds between single-document upserts (0: skip)")
    parser.add_argument("--trickle-max-s", type=float, default=900.0)
    parser.add_argument("--trickle-burst-docs", type=int, default=5_000,
                        help="phase 6 starts with this many documents replaced in calls of "
                             "500, not optimized")
    parser.add_argument("--path", default=None, help="index folder (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from mercury.retrieval.local_index import LocalVectorIndex

    versions = engine_versions()  # at the start: the code this process imported

    work = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="bench-vectors-"))
    overrides = {k: v for k, v in (("ann_min_rows", args.ann_min_rows),
                                   ("optimize_every", args.optimize_every)) if v is not None}
    config = LocalVectorConfig(path=work / "vectors", **overrides)
    print(f"LocalVectorIndex at {config.path} (ann_min_rows {config.ann_min_rows:,}, "
          f"optimize_every {config.optimize_every})", flush=True)
    index = LocalVectorIndex(config)
    created = int(time.time() * 1000)
    spec = VersionSpec(name="bench-knowledge-random-384", alias="bench",
                       embedding_model="random-clustered", embedding_version="1",
                       chunking="sections-t200-o32", dimension=DIM, created_at_ms=created)
    index.create_version(spec)

    started = time.perf_counter()
    corpus = Corpus(args.chunks, args.chunks_per_doc, args.centroids, args.merchants, args.seed)
    exact = Exact(corpus)
    print(f"corpus: {corpus.docs:,} documents x {corpus.per_doc} = "
          f"{corpus.docs * corpus.per_doc:,} chunks, {args.centroids:,} centroids, "
          f"{args.merchants:,} merchants ({time.perf_counter() - started:.1f} s)", flush=True)

    clock = [created]
    print("phase 1: first upsert of every document", flush=True)
    insert = timed_writes(index, spec.name, corpus, list(range(corpus.docs)),
                          args.docs_per_call, "insert", clock)

    flat_queries = make_queries(corpus, args.flat_queries, args.seed + 5)
    print(f"phase 1b: {args.flat_queries} queries per filter kind before any optimize (no "
          f"vector index yet: the engine searches exactly)", flush=True)
    flat = measure_search(index, spec.name, exact, flat_queries, None, [])

    print("phase 2: index build (optimize)", flush=True)
    t0 = time.perf_counter()
    build_info = optimize(index, spec.name)
    build_s = time.perf_counter() - t0
    print(f"  optimize: {build_s:.1f} s ({build_info})", flush=True)

    print(f"phase 3: replace {args.update_docs:,} existing documents (steady-state upserts)",
          flush=True)
    rng = np.random.default_rng(args.seed + 1)
    updated = sorted(rng.choice(corpus.docs, min(args.update_docs, corpus.docs),
                                replace=False).tolist())
    for d in updated:
        corpus.generation[d] += 1
        exact.refresh(d)
    update = timed_writes(index, spec.name, corpus, updated, args.docs_per_call, "update",
                          clock)
    t0 = time.perf_counter()
    build_info_2 = optimize(index, spec.name)
    reoptimize_s = time.perf_counter() - t0
    print(f"  optimize after updates: {reoptimize_s:.1f} s ({build_info_2})", flush=True)

    import torch

    from mercury.retrieval.embedding import open_embedder

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    embedder = open_embedder("all-MiniLM-L6-v2")
    t0 = time.perf_counter()
    embedder.embed(["warm up"])
    print(f"model loaded in {time.perf_counter() - t0:.1f} s; torch {torch.get_num_threads()} "
          f"thread(s)", flush=True)
    questions = questions_for(3 * args.queries, args.seed)
    queries = make_queries(corpus, args.queries, args.seed + 2)
    print(f"phase 4: {args.queries} queries per filter kind, k={K}", flush=True)
    search = measure_search(index, spec.name, exact, queries, embedder, questions)

    print(f"phase 5: {config.optimize_every} single-document upserts (the indexer's write "
          f"when changes trickle in); the last one reaches optimize_every", flush=True)
    single = []
    picks = rng.choice(corpus.docs, config.optimize_every, replace=False).tolist()
    for i, d in enumerate(picks):
        corpus.generation[d] += 1
        clock[0] += 1
        write = corpus.write(d, int(corpus.generation[d]), clock[0])
        t0 = time.perf_counter()
        index.write(spec.name, [write])
        single.append(time.perf_counter() - t0)
        if (i + 1) % 50 == 0 or i + 1 == len(picks):
            print(f"  {i + 1:>4} single writes, last {single[-1] * 1000:,.0f} ms", flush=True)
    upkeep_s = None
    if hasattr(index, "wait_for_upkeep"):  # an optimize started by the write, off its path
        t0 = time.perf_counter()
        index.wait_for_upkeep()
        upkeep_s = round(time.perf_counter() - t0, 1)
        print(f"  background optimize finished {upkeep_s} s after the last write returned",
              flush=True)
    single_writes = {"writes": len(single), "before_the_optimizing_one_ms":
                     percentiles(single[:-1]) if len(single) > 1 else None,
                     "the_optimizing_write_s": round(single[-1], 1),
                     "background_optimize_after_it_s": upkeep_s}

    trickle_result = None
    if args.trickle_interval_s > 0 and hasattr(index, "wait_for_upkeep"):
        print(f"phase 6: single-document upserts every {args.trickle_interval_s} s (changes "
              f"trickling in) through the next background optimize, until it ends", flush=True)
        trickle_result = trickle(index, spec.name, corpus, rng, clock, config.optimize_every,
                                 args.trickle_interval_s, args.trickle_max_s,
                                 args.trickle_burst_docs)

    disk = sum(p.stat().st_size for p in config.path.rglob("*") if p.is_file())
    print()
    print(f"upserts through write ({args.docs_per_call} docs x {args.chunks_per_doc} chunks per "
          f"call, MiniLM excluded):")
    print(f"  first insert: {insert['chunks']:,} chunks in {insert['write_seconds']} s = "
          f"{insert['chunks_per_s']:,} chunks/s ({insert['documents_per_s']:,} docs/s); call "
          f"p50 {insert['call_seconds']['p50'] / 1000:.2f} s, max "
          f"{insert['call_seconds']['max'] / 1000:.2f} s")
    print(f"  replace existing: {update['chunks']:,} chunks in {update['write_seconds']} s = "
          f"{update['chunks_per_s']:,} chunks/s ({update['documents_per_s']:,} docs/s)")
    sw = single_writes["before_the_optimizing_one_ms"]
    if sw:
        print(f"  single-document upserts at {corpus.docs * corpus.per_doc:,} chunks: p50 "
              f"{sw['p50']:.0f} ms, p95 {sw['p95']:.0f} ms; write #{len(single)} (the one "
              f"that triggers optimize) {single_writes['the_optimizing_write_s']} s"
              + (f", then {upkeep_s} s until its background optimize finished"
                 if upkeep_s is not None else ""))
    if trickle_result:
        t = trickle_result
        print(f"  after a burst of {t['burst_docs']:,} replaced documents, writes every "
              f"{t['interval_s']} s through a background optimize: "
              f"{t['writes']} writes, p50 {t['write_ms']['p50']:.0f} ms, p95 "
              f"{t['write_ms']['p95']:.0f} ms; optimize ran {t['optimize_ran_s']} s, "
              f"{'gave up' if t['optimize_gave_up'] else 'finished'} ({t['conflicts_logged']} "
              f"failure logged); fragments {t['before']['fragments']} -> "
              f"{t['after']['fragments']}, rows outside the vector index "
              f"{t['before']['unindexed_rows']} -> {t['after']['unindexed_rows']}")
    print(f"index build (optimize) after insert: {build_s:.1f} s; after updates: "
          f"{reoptimize_s:.1f} s; on disk {disk / 2**20:,.0f} MiB")
    print(f"\n{'ms, k=5':<20}{'kNN p50':>9}{'p95':>8}{'exact p50':>11}{'p95':>8}"
          f"{'hybrid p50':>12}{'p95':>8}{'+embed p50':>12}{'p95':>8}{'recall@5':>10}"
          f"{'rows p50':>10}")
    for kind, r in search.items():
        e, x = r["engine_ms"], r["exact_numpy_ms"]
        h, w = r["hybrid_ms"], r["hybrid_with_embedding_ms"]
        print(f"{kind:<20}{e['p50']:>9.2f}{e['p95']:>8.2f}{x['p50']:>11.2f}{x['p95']:>8.2f}"
              f"{h['p50']:>12.2f}{h['p95']:>8.2f}{w['p50']:>12.1f}{w['p95']:>8.1f}"
              f"{r[f'recall_at_{K}']:>10.3f}{r['filtered_rows']['p50']:>10,}")
    for kind, r in flat.items():
        e, x = r["engine_ms"], r["exact_numpy_ms"]
        label = f"{kind}, flat"
        print(f"{label:<20}{e['p50']:>9.2f}{e['p95']:>8.2f}{x['p50']:>11.2f}{x['p95']:>8.2f}"
              f"{'-':>12}{'-':>8}{'-':>12}{'-':>8}"
              f"{r[f'recall_at_{K}']:>10.3f}{r['filtered_rows']['p50']:>10,}")
    print("(flat: before the first optimize: no vector index, one fragment per insert call)")

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python bench/retrieval_index.py", *sys.argv[1:]]),
        "engine": versions, "config": {"ann_min_rows": config.ann_min_rows,
                                                "optimize_every": config.optimize_every},
        "chunks": corpus.docs * corpus.per_doc, "documents": corpus.docs,
        "centroids": args.centroids, "merchants": args.merchants, "k": K,
        "insert": insert, "optimize_seconds": round(build_s, 2), "optimize_info": build_info,
        "update": update, "reoptimize_seconds": round(reoptimize_s, 2),
        "disk_bytes": disk, "search": search, "search_before_optimize_flat": flat,
        "single_document_writes": single_writes, "trickle": trickle_result,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")
    index.close()
    if not args.path:
        shutil.rmtree(work, ignore_errors=True)


class _Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def table_state(index, name: str) -> dict:
    """Fragments and rows not yet in the vector index (LanceDB's own statistics)."""
    from mercury.retrieval.local_index import chunks_table_name

    table = index._table(chunks_table_name(name))  # the bench reads the engine's own table
    stats = table.stats()
    vector = table.index_stats("vector_idx")
    return {"fragments": stats["fragment_stats"]["num_fragments"],
            "rows": stats["num_rows"],
            "unindexed_rows": vector.num_unindexed_rows if vector else None}


def trickle(index, name: str, corpus: Corpus, rng, clock: list[int], optimize_every: int,
            interval_s: float, max_s: float, burst_docs: int) -> dict:
    """One single-document upsert every ``interval_s`` until the background optimize that the
    ``optimize_every``-th of them triggers has ended (or ``max_s`` passed). Whether that
    optimize committed or gave up is read from the engine's warning log."""
    captured = _Captured()
    logging.getLogger("mercury.retrieval.local_index").addHandler(captured)
    if burst_docs:
        # a burst first (a bulk re-publish): many rows of the big fragment deleted, so the
        # next compaction has to rewrite it
        burst = sorted(rng.choice(corpus.docs, burst_docs, replace=False).tolist())
        for d in burst:
            corpus.generation[d] += 1
        timed_writes(index, name, corpus, burst, 500, "burst", clock)
    before = table_state(index, name)
    latencies, started, triggered_at, ended_at = [], time.perf_counter(), None, None
    try:
        while time.perf_counter() - started < max_s:
            d = int(rng.integers(0, corpus.docs))
            corpus.generation[d] += 1
            clock[0] += 1
            write = corpus.write(d, int(corpus.generation[d]), clock[0])
            t0 = time.perf_counter()
            index.write(name, [write])
            latencies.append(time.perf_counter() - t0)
            worker = getattr(index, "_optimizing", {}).get(name)  # the engine's upkeep thread
            running = worker is not None and worker.is_alive()
            if running and triggered_at is None:
                triggered_at = time.perf_counter()
                print(f"  write {len(latencies)} triggered a background optimize", flush=True)
            if triggered_at is not None and not running:
                ended_at = time.perf_counter()
                break
            if len(latencies) % 50 == 0:
                p = percentiles(latencies[-50:])
                print(f"  {len(latencies):>4} writes, last 50: p50 {p['p50']:.0f} ms, p95 "
                      f"{p['p95']:.0f} ms{'; optimize running' if running else ''}",
                      flush=True)
            time.sleep(max(0.0, interval_s - (time.perf_counter() - t0)))
    finally:
        logging.getLogger("mercury.retrieval.local_index").removeHandler(captured)
    index.wait_for_upkeep()
    failures = [m for m in captured.records if "optimize" in m and "failed" in m]
    return {"interval_s": interval_s, "burst_docs": burst_docs, "writes": len(latencies),
            "write_ms": percentiles(latencies),
            "optimize_ran_s": (round(ended_at - triggered_at, 1)
                               if triggered_at and ended_at else None),
            "optimize_gave_up": bool(failures), "conflicts_logged": len(failures),
            "failure_messages": [m[:300] for m in failures],
            "before": before, "after": table_state(index, name)}


def optimize(index, name: str) -> str:
    """The engine's explicit build step; adapted to LocalVectorIndex's public API."""
    index.optimize(name)
    return "LocalVectorIndex.optimize"


def engine_versions() -> dict:
    import subprocess

    import lancedb
    import pyarrow

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    dirty = git("status", "--porcelain", "--", "mercury/retrieval")
    return {"lancedb": lancedb.__version__, "pyarrow": pyarrow.__version__,
            "commit": git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")}


if __name__ == "__main__":
    main()

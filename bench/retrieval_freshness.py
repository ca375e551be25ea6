"""Freshness of the knowledge index: a document change written to the event log -> searchable.

Setup, in a temporary folder (a copy of config/local.yaml with every data path redirected,
``MERCURY_CONFIG`` pointing at it):
1. ``--documents`` generated documents (policies and merchant help pages) are written to the
   ``knowledge_documents`` stream, and a version is built from them and served behind the
   alias with ``rebuild.start_version`` / ``fill_version`` / ``promote`` (all-MiniLM-L6-v2,
   the configured chunking).
2. The consumer group is brought level with the log (one pass of ``run_indexer`` without
   follow: every change is a replay the ledger skips), so the measured indexer starts idle.
3. The indexer runs as ``mercury knowledge index --follow`` in its own process (the command
   the supervisor runs; ``--mode thread`` runs ``run_indexer(follow=True)`` in a thread of
   this process instead). One warm-up change is written and awaited first, so the model load
   (~20 s, lazy, on the first change) is not counted.

Measured, ``--changes`` upserts then ``--deletes`` deletes, one change at a time with a random
0.2-0.6 s pause between them (so writes do not line up with the indexer's 0.2 s idle cycle):
- UPSERT: a merchant page whose "Refunds" paragraph gains a unique marker word is sent
  through ``open_producer(settings, writer_id=...)`` and flushed (the file is renamed into the
  log); from the end of the flush, ``VectorIndex.search_alias`` (what the retriever calls,
  without its result cache) is polled every ``--poll-ms`` with the chunk's own embedding,
  filtered to the page's merchant_id, until a hit's text holds the marker.
- DELETE of another merchant page: polled until the merchant's filter returns no hit.
With ``--pad-chunks N`` the version first gets N filler chunks (random clustered vectors,
written straight into it, then optimized): freshness on a large, ANN-indexed version. The
indexer then optimizes inside its ``optimize_every``-th write (200 by default), which the
change that triggers it waits for.

Then, with the indexer stopped, ``DocumentApplier.apply`` alone for single-document upserts
of the same kind, in this process: the part of the delay that is indexing work (chunk, read
the ledger, reuse stored vectors, embed the changed chunk, one write) rather than waiting.

Results go to ``bench/results/retrieval_freshness.json``, one entry per command line and
commit of the code measured (a new run of both replaces its entry).
Usage: python bench/retrieval_freshness.py [--changes 50] [--deletes 20] [--documents 400]
       [--mode subprocess|thread] [--poll-ms 10] [--omp-threads N] [--pad-chunks N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "retrieval_freshness.json"
STREAM = "knowledge_documents"


def percentiles(samples_s: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples_s)
    if not ms:
        return {"n": 0}

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "min": round(ms[0], 1),
            "max": round(ms[-1], 1), "mean": round(statistics.fmean(ms), 1), "n": len(ms)}


def now_ms() -> int:
    return int(time.time() * 1000)


def change(spec, op: str, updated_at: int, body: str | None = None) -> dict:
    return {"change_id": str(uuid.uuid4()), "doc_id": spec.doc_id, "op": op,
            "doc_type": spec.doc_type, "source_url": spec.source_url,
            "title": None if op == "DELETE" else spec.title,
            "body": None if op == "DELETE" else body, "language": spec.language,
            "merchant_id": spec.merchant_id, "updated_at": updated_at, "ingest_ts": updated_at}


def with_marker(spec, marker: str) -> str:
    """The page as first published, its Refunds paragraph ending with the marker word."""
    from dataclasses import replace

    from mercury.generator.documents import render

    sections = tuple((h, f"{p} Reference {marker}." if h == "Refunds" else p)
                     for h, p in spec.sections)
    return render(replace(spec, sections=sections), 0)


def send(settings, records: list[dict], writer: str) -> float:
    """Writes and flushes; returns perf_counter() at the end of the flush."""
    import orjson

    from mercury.eventlog import open_producer

    with open_producer(settings, writer_id=writer) as producer:
        for record in records:
            producer.send(STREAM, orjson.dumps(record), key=record["doc_id"])
        producer.flush()
        flushed = time.perf_counter()
    return flushed


def wait_for(predicate, timeout_s: float, poll_s: float) -> float | None:
    """perf_counter() at the first poll where ``predicate`` holds; None on timeout."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(poll_s)
    return None


class Indexer:
    """The indexer under test: ``mercury knowledge index --follow`` or a thread."""

    def __init__(self, mode: str, settings, config: Path, log: Path, embedder,
                 omp_threads: int | None):
        self.mode = mode
        self.log = log
        if mode == "subprocess":
            mercury = Path(sys.executable).with_name("mercury")
            command = ([str(mercury)] if mercury.exists()
                       else [sys.executable, "-m", "mercury.cli"])
            self.command = [*command, "knowledge", "index", "--follow"]
            self.handle = open(log, "wb")
            env = {**os.environ, "MERCURY_CONFIG": str(config)}
            if omp_threads:
                env["OMP_NUM_THREADS"] = str(omp_threads)  # torch's intra-op threads
                self.command = [f"OMP_NUM_THREADS={omp_threads}", *self.command]
            self.process = subprocess.Popen(self.command[1:] if omp_threads else self.command,
                                            stdout=self.handle, stderr=subprocess.STDOUT,
                                            env=env)
        else:
            from mercury.retrieval.service import run_indexer

            self.command = ["run_indexer(settings, follow=True, stop=event) in a thread"]
            self.stop_event = threading.Event()
            self.thread = threading.Thread(
                target=run_indexer, daemon=True,
                kwargs={"settings": settings, "follow": True, "stop": self.stop_event,
                        "embedder_for": lambda _name: embedder})
            self.thread.start()

    def alive(self) -> bool:
        if self.mode == "subprocess":
            return self.process.poll() is None
        return self.thread.is_alive()

    def stop(self) -> None:
        if self.mode == "subprocess":
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.handle.close()
        else:
            self.stop_event.set()
            self.thread.join(timeout=60)


def engine_commit() -> str:
    """The commit the retrieval code was measured at ("-dirty" if it has local changes)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    dirty = git("status", "--porcelain", "--", "mercury/retrieval", "mercury/eventlog")
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")


def pad(index, name: str, chunks: int, seed: int) -> float:
    """Filler pages written straight into the version (not in the log: only the measured
    pages are), then one optimize, so the version is as large as asked and ANN-indexed."""
    import numpy as np

    from mercury.retrieval.index import ChunkRow, DocumentWrite, LedgerEntry

    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((2_000, 384)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    languages = ("en", "fr", "de", "es")
    started = time.perf_counter()
    pages = chunks // 5
    for first in range(0, pages, 500):
        writes = []
        for page in range(first, min(pages, first + 500)):
            vectors = centroids[rng.integers(0, 2_000)] + rng.standard_normal((5, 384)) * 0.03
            vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
                np.float32)
            doc_id, language = f"pad-{page:07d}", languages[page % 4]
            rows = [ChunkRow(chunk_id=f"{doc_id}:{i}:pad", doc_id=doc_id, position=i,
                             doc_type="MERCHANT_HELP", language=language,
                             merchant_id=f"mch_pad_{page % 5_000:05d}", title=f"Filler {page}",
                             heading="Section", source_url=None,
                             text="Filler passage for the size of the index.", updated_at=1,
                             vector=vectors[i]) for i in range(5)]
            writes.append(DocumentWrite(LedgerEntry(doc_id, (1, 0, "pad"), False,
                                                    tuple(r.chunk_id for r in rows)), rows))
        index.write(name, writes)
        print(f"  padding: {min(pages, first + 500) * 5:,}/{chunks:,} chunks", flush=True)
    t0 = time.perf_counter()
    index.optimize(name)
    print(f"  padded with {chunks:,} chunks in {time.perf_counter() - started:.0f} s "
          f"(optimize {time.perf_counter() - t0:.0f} s)", flush=True)
    return round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--deletes", type=int, default=20)
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--mode", choices=("subprocess", "thread"), default="subprocess")
    parser.add_argument("--poll-ms", type=float, default=10.0)
    parser.add_argument("--omp-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the indexer process (torch's intra-op "
                             "threads; default: torch's own, one per core)")
    parser.add_argument("--pad-chunks", type=int, default=0,
                        help="random-vector chunks (5 per filler page, merchants of their "
                             "own) written straight into the version and optimized before the "
                             "indexer starts, to measure on a large, ANN-indexed version")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per change")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    from tests.conftest import write_config

    work = Path(tempfile.mkdtemp(prefix="bench-knowledge-fresh-"))
    config = write_config(work)
    os.environ["MERCURY_CONFIG"] = str(config)

    from mercury.config import load_settings
    from mercury.generator.documents import build_documents
    from mercury.generator.world import build_world
    from mercury.retrieval import rebuild
    from mercury.retrieval.chunking import ChunkingSpec, chunk_document
    from mercury.retrieval.documents import Document
    from mercury.retrieval.embedding import open_embedder
    from mercury.retrieval.factory import open_index
    from mercury.retrieval.index import SearchFilter
    from mercury.retrieval.indexer import DocumentApplier, load_status
    from mercury.retrieval.service import run_indexer

    settings = load_settings()
    cfg = settings.retrieval
    commit = engine_commit()  # at the start: the code this process and the indexer import
    poll_s = args.poll_ms / 1000
    rng = random.Random(args.seed)
    world = build_world(random.Random(args.seed), 10, args.documents)
    specs = build_documents(random.Random(args.seed), world.merchants, args.documents)
    merchant_pages = [s for s in specs if s.merchant_id is not None]
    rng.shuffle(merchant_pages)
    needed = 1 + args.changes + args.deletes + args.changes
    if len(merchant_pages) < needed:
        raise SystemExit(f"--documents {args.documents} gives {len(merchant_pages)} merchant "
                         f"pages; {needed} are needed")
    warm, upserted = merchant_pages[0], merchant_pages[1:1 + args.changes]
    deleted = merchant_pages[1 + args.changes:1 + args.changes + args.deletes]
    applied_alone = merchant_pages[1 + args.changes + args.deletes:needed]
    clock = [now_ms() - 3_600_000]  # published an hour ago; every later change is newer

    def tick() -> int:
        clock[0] = max(clock[0] + 1, now_ms())
        return clock[0]

    from mercury.generator.documents import render

    print(f"work folder {work}; {len(specs)} documents ({len(merchant_pages)} merchant pages)",
          flush=True)
    send(settings, [change(s, "UPSERT", clock[0] - i, render(s, 0))
                    for i, s in enumerate(specs)], "bench_seed")

    index = open_index(cfg)
    embedder = open_embedder(cfg.embedding_model, cfg.embed_batch_size)
    chunking = ChunkingSpec(cfg.max_tokens, cfg.overlap_tokens)
    started = time.perf_counter()
    spec = rebuild.start_version(index, cfg.alias, embedder, chunking, now_ms())
    filled = rebuild.fill_version(settings, index, spec, embedder)
    rebuild.promote(index, spec)
    build_s = time.perf_counter() - started
    print(f"built and promoted {spec.name}: {filled.applied} documents, "
          f"{filled.chunks_embedded} chunks embedded in {build_s:.1f} s (model load included)",
          flush=True)
    pad_s = pad(index, spec.name, args.pad_chunks, args.seed) if args.pad_chunks else None
    status = run_indexer(settings, follow=False, index=index,
                         embedder_for=lambda _name: embedder)
    print(f"consumer group level with the log: read {status.read}, stale {status.stale}",
          flush=True)

    def marker_chunk(page, marker: str, updated_at: int):
        doc = Document(doc_id=page.doc_id, change_id="probe", deleted=False,
                       updated_at=updated_at, doc_type=page.doc_type, language=page.language,
                       title=page.title, body=with_marker(page, marker),
                       source_url=page.source_url, merchant_id=page.merchant_id)
        return next(c for c in chunk_document(doc, chunking) if marker in c.text)

    def visible(page, marker: str, vector) -> bool:
        hits = index.search_alias(cfg.alias, vector, 5,
                                  SearchFilter(merchant_id=page.merchant_id)).hits
        return any(marker in h.text for h in hits)

    def gone(page, vector) -> bool:
        hits = index.search_alias(cfg.alias, vector, 5,
                                  SearchFilter(merchant_id=page.merchant_id)).hits
        return not any(h.doc_id == page.doc_id for h in hits)

    log = work / "indexer.log"
    indexer = Indexer(args.mode, settings, config, log, embedder, args.omp_threads)
    print(f"indexer: {' '.join(indexer.command)} (log {log})", flush=True)
    upserts: list[float] = []
    deletes: list[float] = []
    misses: dict[str, int] = {"upsert": 0, "delete": 0}
    try:
        marker = f"zqwarm{uuid.uuid4().hex[:8]}"
        vector = embedder.embed([marker_chunk(warm, marker, 0).embed_text])[0]
        flushed = send(settings, [change(warm, "UPSERT", tick(), with_marker(warm, marker))],
                       "bench_warm")
        seen = wait_for(lambda: visible(warm, marker, vector), 180, 0.05)
        if seen is None:
            raise SystemExit(f"the warm-up change never became searchable; see {log}")
        print(f"warm-up change searchable after {seen - flushed:.1f} s (indexer start and "
              f"model load included; not counted)", flush=True)

        for i, page in enumerate(upserted):
            marker = f"zq{i:03d}{uuid.uuid4().hex[:8]}"
            vector = embedder.embed([marker_chunk(page, marker, 0).embed_text])[0]
            time.sleep(rng.uniform(0.2, 0.6))  # after the embedding: no torch threads busy
            record = change(page, "UPSERT", tick(), with_marker(page, marker))
            flushed = send(settings, [record], f"bench_u{i}")
            seen = wait_for(lambda p=page, m=marker, v=vector: visible(p, m, v),
                            args.timeout_s, poll_s)
            if seen is None:
                misses["upsert"] += 1
                print(f"  upsert {i + 1}: not searchable within {args.timeout_s} s", flush=True)
                continue
            upserts.append(seen - flushed)
            if (i + 1) % 10 == 0 or i + 1 == len(upserted):
                p = percentiles(upserts)
                print(f"  upserts {i + 1:>3}/{len(upserted)}: p50 {p['p50']} ms, p95 "
                      f"{p['p95']} ms, max {p['max']} ms", flush=True)

        for i, page in enumerate(deleted):
            vector = embedder.embed([f"{page.title} refunds"])[0]
            if gone(page, vector):
                raise SystemExit(f"{page.doc_id} is not in the index before its delete")
            time.sleep(rng.uniform(0.2, 0.6))
            flushed = send(settings, [change(page, "DELETE", tick())], f"bench_d{i}")
            seen = wait_for(lambda p=page, v=vector: gone(p, v), args.timeout_s, poll_s)
            if seen is None:
                misses["delete"] += 1
                continue
            deletes.append(seen - flushed)
        p = percentiles(deletes)
        print(f"  deletes {len(deletes)}: p50 {p.get('p50')} ms, p95 {p.get('p95')} ms",
              flush=True)
        if not indexer.alive():
            raise SystemExit(f"the indexer exited; see {log}")
    finally:
        indexer.stop()
    indexer_status = load_status(settings.data_dir)

    # The indexing work alone, same kind of change, no log and no waiting.
    applier = DocumentApplier(index, cfg.alias, lambda _name: embedder)
    apply_s, embedded = [], []
    for i, page in enumerate(applied_alone):
        marker = f"zqa{i:03d}{uuid.uuid4().hex[:8]}"
        doc = Document(doc_id=page.doc_id, change_id=str(uuid.uuid4()), deleted=False,
                       updated_at=tick(), doc_type=page.doc_type, language=page.language,
                       title=page.title, body=with_marker(page, marker),
                       source_url=page.source_url, merchant_id=page.merchant_id)
        t0 = time.perf_counter()
        stats = applier.apply([doc])
        apply_s.append(time.perf_counter() - t0)
        embedded.append((stats.chunks_embedded, stats.chunks_reused))
    search_s = []
    for page in upserted:
        vector = embedder.embed([page.title])[0]
        t0 = time.perf_counter()
        index.search_alias(cfg.alias, vector, 5, SearchFilter(merchant_id=page.merchant_id))
        search_s.append(time.perf_counter() - t0)

    chunks_total = sum(len(chunk_document(Document(
        doc_id=s.doc_id, change_id="x", deleted=False, updated_at=1, doc_type=s.doc_type,
        language=s.language, title=s.title, body=render(s, 0)), chunking)) for s in specs)
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python bench/retrieval_freshness.py", *sys.argv[1:]]),
        "engine_commit": commit,
        "mode": args.mode, "indexer_command": " ".join(indexer.command),
        "indexer_omp_threads": args.omp_threads,
        "documents": len(specs), "chunks_in_version": chunks_total + args.pad_chunks,
        "padding_chunks": args.pad_chunks, "padding_write_and_optimize_s": pad_s,
        "version": spec.name,
        "index": {"type": "local", "ann_min_rows": cfg.index.ann_min_rows,
                  "optimize_every": cfg.index.optimize_every},
        "event_log": type(settings.event_log).__name__,
        "indexer_idle_sleep_s": 0.2, "poll_ms": args.poll_ms,
        "upsert_to_searchable_ms": percentiles(upserts),
        "delete_to_gone_ms": percentiles(deletes), "not_seen_within_timeout": misses,
        "apply_one_upsert_in_process_ms": percentiles(apply_s),
        "apply_chunks_embedded_reused": embedded[:5],
        "search_alias_ms": percentiles(search_s),
        "indexer_status": indexer_status, "build_seconds": round(build_s, 1),
        "cpus": os.cpu_count(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    print()
    print(f"{'ms':<52}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'n':>5}")
    for label, key in (("UPSERT flushed -> marker searchable", "upsert_to_searchable_ms"),
                       ("DELETE flushed -> gone from search", "delete_to_gone_ms"),
                       ("DocumentApplier.apply, one upsert (no waiting)",
                        "apply_one_upsert_in_process_ms"),
                       ("search_alias, merchant filter", "search_alias_ms")):
        p = result[key]
        if p["n"]:
            print(f"{label:<52}{p['p50']:>8}{p['p95']:>8}{p['p99']:>8}{p['max']:>8}{p['n']:>5}")
    print(f"not searchable within {args.timeout_s} s: {misses}; indexer ({args.mode}) "
          f"embedded {indexer_status and indexer_status['chunks_embedded']} chunks, reused "
          f"{indexer_status and indexer_status['chunks_reused']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(RESULTS.read_text()).get("runs", []) if RESULTS.exists() else []
    runs = [r for r in runs if (r.get("command"), r.get("engine_commit"))
            != (result["command"], result["engine_commit"])] + [result]
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    index.close()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

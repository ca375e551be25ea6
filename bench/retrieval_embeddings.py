"""Embedding cost of the knowledge index on this CPU: load, throughput, the query path, and
what incremental indexing saves.

1. Model load: ``open_embedder("all-MiniLM-L6-v2")`` plus its first call, each in a fresh
   Python process (``--load-runs`` of them), so the import of torch and the read of the
   weights are counted every time, as when an indexer or a search process starts.
2. Throughput, texts/s at batch sizes 1, 16 and 64 (``MiniLMEmbedder.batch_size``, the knob
   the indexer uses), best of ``--repeats`` runs, for each torch thread count in
   ``--threads`` (torch defaults to one per core; on a busy 2-core machine one thread can be
   much faster), on two corpora:
   - ``generated``: the chunks (``embed_text``, title and headings included) of generated
     knowledge documents (``mercury.generator.documents``) chunked with the default spec;
     these documents are short, so their chunks are short;
   - ``passages``: passages of 60-200 WordPiece tokens (uniform), each a title > heading
     prefix plus sentences drawn from the same generated documents, closer to the size of a
     real help-centre chunk.
   Each call embeds the whole corpus at once, as ``DocumentApplier`` does (the library sorts
   by length inside a call, so a batch pads only to its longest member).
3. The query path: one question per call (``embed([question])``), distinct questions in four
   languages, no cache: p50/p95/p99 ms; then again (``--contended-questions``) while a
   busy-looping Python process, started and killed by this script, holds one of the cores,
   as an indexer or any other job on the same host would.
4. Incremental indexing: for edits of one section, the chunks of revision r and r+1
   (``chunk_document``) are compared, counting what has to be embedded again when stored
   vectors are reused by chunk id (id = doc, position, hash) and when they are reused by
   content hash within the document (``DocumentApplier._vectors`` since commit 493c92b).
   ``--only-incremental`` recomputes just this part (no model, seconds) into the results.

Results go to ``bench/results/retrieval_embeddings.json``.
Usage: python bench/retrieval_embeddings.py [--texts 512] [--questions 300] [--load-runs 3]
       [--repeats 2] [--threads 2,1] [--contended-questions 100] [--only-incremental]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mercury.generator.documents import DocumentSpec, build_documents, render  # noqa: E402
from mercury.generator.world import build_world  # noqa: E402
from mercury.retrieval.chunking import (  # noqa: E402
    ChunkingSpec,
    chunk_document,
    wordpiece_counter,
)
from mercury.retrieval.documents import Document  # noqa: E402

RESULTS = REPO / "bench" / "results" / "retrieval_embeddings.json"
MODEL = "all-MiniLM-L6-v2"
BATCH_SIZES = (1, 16, 64)
SPEC = ChunkingSpec()  # the default of config: sections-t200-o32

LOAD_PROBE = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
from mercury.retrieval.embedding import open_embedder
embedder = open_embedder({model!r})
embedder._load()
t1 = time.perf_counter()
version = embedder.version
t2 = time.perf_counter()
embedder.embed(["Why was my card declined?"])
t3 = time.perf_counter()
print(json.dumps({{"load_s": t1 - t0, "version_s": t2 - t1, "first_embed_s": t3 - t2}}))
"""

QUESTIONS = {
    "en": ["Why was my card declined at {m}?", "How long does a refund from {m} take?",
           "How do I dispute a charge from {m} I do not recognise?",
           "What is the foreign transaction fee when I pay {m} abroad?",
           "Can I split my purchase at {m} into installments?",
           "My card was frozen when I paid {m}, what now?",
           "How will a charge from {m} appear on my statement?"],
    "fr": ["Pourquoi ma carte a-t-elle été refusée chez {m} ?",
           "Combien de temps prend un remboursement de {m} ?",
           "Comment contester un paiement inconnu de {m} ?",
           "Quels frais pour un paiement chez {m} à l'étranger ?"],
    "de": ["Warum wurde meine Karte bei {m} abgelehnt?",
           "Wie lange dauert eine Rückerstattung von {m}?",
           "Wie beanstande ich eine Zahlung an {m}?",
           "Welche Auslandsgebühren fallen bei {m} an?"],
    "es": ["¿Por qué se rechazó mi tarjeta en {m}?",
           "¿Cuánto tarda un reembolso de {m}?",
           "¿Cómo disputo un cargo de {m} que no reconozco?",
           "¿Puedo pagar mi compra en {m} a plazos?"],
}


def percentiles(samples_s: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples_s)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ms[-1], 2),
            "mean": round(statistics.fmean(ms), 2), "n": len(ms)}


def as_document(spec: DocumentSpec, body: str, updated_at: int = 1) -> Document:
    return Document(doc_id=spec.doc_id, change_id=f"c{updated_at}", deleted=False,
                    updated_at=updated_at, doc_type=spec.doc_type, language=spec.language,
                    title=spec.title, body=body, source_url=spec.source_url,
                    merchant_id=spec.merchant_id)


def generated_specs(seed: int, documents: int) -> tuple[list[DocumentSpec], list]:
    rng = random.Random(seed)
    world = build_world(rng, 10, documents)
    return build_documents(rng, world.merchants, documents), list(world.merchants)


def generated_chunks(specs: list[DocumentSpec]) -> list[str]:
    texts = []
    for spec in specs:
        texts += [c.embed_text for c in chunk_document(as_document(spec, render(spec, 1)), SPEC)]
    return texts


def sentences_of(specs: list[DocumentSpec]) -> list[str]:
    out = []
    for spec in specs:
        for _, paragraph in spec.sections:
            out += [s.strip() for s in paragraph.replace("? ", "?|").replace(". ", ".|").split("|")
                    if s.strip()]
    return sorted(set(out))


def passages(specs: list[DocumentSpec], count: int, rng: random.Random) -> list[str]:
    """Title > heading, then random generated sentences until 60-200 tokens (uniform)."""
    tokens = wordpiece_counter()
    pool = sentences_of(specs)
    lengths = [tokens([s])[0] for s in pool]
    out = []
    for _ in range(count):
        spec = rng.choice(specs)
        heading = rng.choice(spec.sections)[0]
        target = rng.randint(60, 200) - 2 - tokens([f"{spec.title} > {heading}"])[0] - 1
        body, used, misses = [], 0, 0
        while misses < 50:
            i = rng.randrange(len(pool))
            if used + lengths[i] > target:
                misses += 1
                continue
            body.append(pool[i])
            used += lengths[i]
        out.append(f"{spec.title} > {heading}\n{' '.join(body)}")
    return out


def token_stats(texts: list[str]) -> dict:
    n = sorted(wordpiece_counter()(texts))
    return {"texts": len(n), "mean": round(statistics.fmean(n) + 2, 1),
            "p50": n[len(n) // 2] + 2, "max": n[-1] + 2, "min": n[0] + 2,
            "note": "WordPiece tokens incl. [CLS] and [SEP]"}


def measure_load(runs: int) -> list[dict]:
    out = []
    for i in range(runs):
        code = LOAD_PROBE.format(repo=str(REPO), model=MODEL)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  load run {i + 1}/{runs}: import + load {timing['load_s']:.2f} s, weights "
              f"digest {timing['version_s']:.3f} s, first embed {timing['first_embed_s']:.3f} s",
              flush=True)
        out.append({k: round(v, 3) for k, v in timing.items()})
    return out


def measure_throughput(embedder, corpora: dict[str, list[str]], threads: int,
                       repeats: int) -> dict:
    """Best of ``repeats`` runs per setting (the least disturbed on a shared machine); every
    run's rate is kept too."""
    import torch

    torch.set_num_threads(threads)
    out: dict = {}
    for name, texts in corpora.items():
        out[name] = {}
        embedder.batch_size = 64
        embedder.embed(texts[:128])  # warm up kernels and allocator on this length mix
        for batch in BATCH_SIZES:
            embedder.batch_size = batch
            runs = []
            for _ in range(repeats):
                load_before = os.getloadavg()[0]
                cpu = time.process_time()
                started = time.perf_counter()
                vectors = embedder.embed(texts)
                seconds = time.perf_counter() - started
                cpu = time.process_time() - cpu
                assert vectors.shape == (len(texts), embedder.dimension)
                runs.append({"seconds": round(seconds, 2),
                             "texts_per_s": round(len(texts) / seconds, 1),
                             "cpu_s_per_wall_s": round(cpu / seconds, 2),
                             "loadavg_1m": round((load_before + os.getloadavg()[0]) / 2, 2)})
                print(f"  {threads} thread(s) {name:<10} batch {batch:>3}: {len(texts)} texts "
                      f"in {seconds:6.2f} s = {len(texts) / seconds:7.1f} texts/s (cpu/wall "
                      f"{cpu / seconds:.2f}, load {os.getloadavg()[0]:.1f})", flush=True)
            best = max(runs, key=lambda r: r["texts_per_s"])
            out[name][batch] = {"texts": len(texts), **best,
                                "ms_per_text": round(1000 / best["texts_per_s"], 2),
                                "all_runs_texts_per_s": [r["texts_per_s"] for r in runs]}
    embedder.batch_size = 64
    return out


def questions(merchants: list, count: int, rng: random.Random) -> list[str]:
    names = [m.name for m in merchants]
    pool = [(lang, template) for lang, templates in QUESTIONS.items() for template in templates]
    seen: set[str] = set()
    out = []
    while len(out) < count:
        _, template = rng.choice(pool)
        question = template.format(m=rng.choice(names))
        if question not in seen:
            seen.add(question)
            out.append(question)
    return out


def measure_queries(embedder, qs: list[str], threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    embedder.batch_size = 64
    for q in qs[:20]:
        embedder.embed([q])
    samples = []
    load_before = os.getloadavg()[0]
    for q in qs[20:]:
        started = time.perf_counter()
        embedder.embed([q])
        samples.append(time.perf_counter() - started)
    out = percentiles(samples)
    out["loadavg_1m"] = round((load_before + os.getloadavg()[0]) / 2, 2)
    print(f"  {threads} thread(s): p50 {out['p50']} ms, p95 {out['p95']} ms "
          f"(load {out['loadavg_1m']})", flush=True)
    return out


# ---- incremental indexing ------------------------------------------------------------------

def changed(before: list, after: list) -> dict:
    """Chunks to embed again when vectors are reused by chunk id (id = doc, position, hash),
    and when they are reused by content hash within the document (what
    ``DocumentApplier._vectors`` does since commit 493c92b)."""
    held_ids = {c.chunk_id for c in before}
    held_hashes = {c.content_hash for c in before}
    by_id = [c for c in after if c.chunk_id not in held_ids]
    by_hash = [c for c in after if c.content_hash not in held_hashes]
    return {"chunks_before": len(before), "chunks_after": len(after),
            "re_embedded": len(by_id), "reused": len(after) - len(by_id),
            "re_embedded_by_content_hash": len(by_hash)}


def long_document(rng: random.Random, specs: list[DocumentSpec], sections: int = 12,
                  per_section: int = 300) -> DocumentSpec:
    """A help page with ``sections`` sections of about ``per_section`` tokens each: every
    section spans two or more chunks, so the overlap between chunks comes into play."""
    tokens = wordpiece_counter()
    pool = sentences_of(specs)
    body = []
    for i in range(sections):
        text, used = [], 0
        while used < per_section:
            sentence = rng.choice(pool)
            text.append(sentence)
            used += tokens([sentence])[0]
        body.append((f"Section {i + 1}", " ".join(text)))
    return DocumentSpec(doc_id="policy-long-en", doc_type="CARD_POLICY", language="en",
                        source_url="https://help.mercurypay.example/en/policies/long",
                        title="Everything about your card", merchant_id=None,
                        sections=tuple(body))


def edit_section(spec: DocumentSpec, index: int, new_text: str) -> DocumentSpec:
    sections = list(spec.sections)
    sections[index] = (sections[index][0], new_text)
    return replace(spec, sections=tuple(sections))


def insert_section(spec: DocumentSpec, index: int, section: tuple[str, str]) -> DocumentSpec:
    sections = list(spec.sections)
    sections.insert(index, section)
    return replace(spec, sections=tuple(sections))


def incremental(specs: list[DocumentSpec], rng: random.Random) -> list[dict]:
    def chunks(spec: DocumentSpec, revision: int) -> list:
        return chunk_document(as_document(spec, render(spec, revision), revision + 1), SPEC)

    def total(pairs) -> dict:
        acc = {"documents": 0, "chunks_before": 0, "chunks_after": 0, "re_embedded": 0,
               "reused": 0, "re_embedded_by_content_hash": 0}
        for before, after in pairs:
            acc["documents"] += 1
            for key, value in changed(before, after).items():
                acc[key] += value
        return acc

    rows = []
    # a) the generator's own update: revision r -> r+1 rewrites the "Updates" section
    rows.append({"scenario": "generator revision r=1 -> r=2 (the Updates section), every "
                             "generated document",
                 **total((chunks(s, 1), chunks(s, 2)) for s in specs)})
    # b) one middle section's paragraph rewritten, same structure
    def rewrite_middle(spec: DocumentSpec) -> DocumentSpec:
        i = len(spec.sections) // 2
        return edit_section(spec, i, spec.sections[i][1] + " This was reviewed this week.")
    rows.append({"scenario": "one middle section's paragraph edited, every generated document",
                 **total((chunks(s, 1), chunks(rewrite_middle(s), 1)) for s in specs)})
    # c) a section inserted near the top: every later chunk changes position
    rows.append({"scenario": "a new section inserted after the first, every generated document",
                 **total((chunks(s, 1),
                          chunks(insert_section(s, 1, ("Notice", "Opening hours changed.")), 1))
                         for s in specs)})
    # d) a long page (12 sections of ~300 tokens): one sentence in section 6 edited
    long_spec = long_document(rng, specs)
    before = chunks(long_spec, 0)
    text = long_spec.sections[5][1]
    first = text.split(". ")[0]
    words = first.split()
    same = edit_section(long_spec, 5, text.replace(
        first, " ".join([words[0], "now", *words[1:]]), 1))
    longer = edit_section(long_spec, 5, text.replace(
        first, first + ". Please allow up to two additional business days in busy periods", 1))
    rows.append({"scenario": "long page (12 sections x ~300 tokens): one word added to a "
                             "sentence of section 6", "documents": 1,
                 **changed(before, chunks(same, 0))})
    rows.append({"scenario": "long page: one sentence of section 6 lengthened by ~15 tokens",
                 "documents": 1, **changed(before, chunks(longer, 0))})
    rows.append({"scenario": "long page: a section inserted after section 1", "documents": 1,
                 **changed(before, chunks(insert_section(long_spec, 1, (
                     "Notice", "Our opening hours changed this month.")), 0))})
    for row in rows:
        row["re_embedded_share"] = round(row["re_embedded"] / max(1, row["chunks_after"]), 3)
        row["re_embedded_by_content_hash_share"] = round(
            row["re_embedded_by_content_hash"] / max(1, row["chunks_after"]), 3)
    return rows


def print_incremental(saved: list[dict]) -> None:
    print(f"\n{'incremental update':<92} {'of':>6} {'by id':>7} {'share':>7} {'by hash':>8} "
          f"{'share':>7}")
    for row in saved:
        print(f"{row['scenario']:<92} {row['chunks_after']:>6,} {row['re_embedded']:>7,} "
              f"{row['re_embedded_share']:>7.1%} {row['re_embedded_by_content_hash']:>8,} "
              f"{row['re_embedded_by_content_hash_share']:>7.1%}")


def only_incremental(args) -> None:
    """Recomputes the incremental part alone (no model needed) into the existing results."""
    specs, _ = generated_specs(args.seed, args.documents)
    saved = incremental(specs, random.Random(args.seed + 1))
    print_incremental(saved)
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result["incremental"] = saved
    result["incremental_command"] = " ".join(["python bench/retrieval_embeddings.py",
                                              *sys.argv[1:]])
    result["incremental_date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nupdated the incremental part of {RESULTS.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=512, help="texts per corpus")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--load-runs", type=int, default=3)
    parser.add_argument("--documents", type=int, default=400, help="generated documents")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="runs per throughput setting")
    parser.add_argument("--contended-questions", type=int, default=100,
                        help="questions measured again while a busy-looping process holds "
                             "one core (0: skip)")
    parser.add_argument("--threads", default="2,1",
                        help="torch intra-op thread counts to measure (torch's default is "
                             "the number of cores)")
    parser.add_argument("--only-incremental", action="store_true",
                        help="recompute only the incremental part (seconds, no model) and "
                             "update it in the existing results file")
    args = parser.parse_args()
    if args.only_incremental:
        only_incremental(args)
        return
    rng = random.Random(args.seed)

    print(f"model load: {args.load_runs} fresh processes", flush=True)
    load = measure_load(args.load_runs)

    specs, merchants = generated_specs(args.seed, args.documents)
    chunks = generated_chunks(specs)
    corpora = {"generated": rng.sample(chunks, min(args.texts, len(chunks))),
               "passages": passages(specs, args.texts, rng)}
    stats = {name: token_stats(texts) for name, texts in corpora.items()}
    for name, s in stats.items():
        print(f"corpus {name}: {s['texts']} texts, tokens mean {s['mean']}, p50 {s['p50']}, "
              f"min {s['min']}, max {s['max']}", flush=True)

    import torch

    from mercury.retrieval.embedding import open_embedder

    embedder = open_embedder(MODEL)
    started = time.perf_counter()
    embedder.embed(["warm up"])
    print(f"model loaded in this process in {time.perf_counter() - started:.1f} s; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    default_threads = torch.get_num_threads()
    threads = [int(t) for t in args.threads.split(",")]
    print("throughput (texts/s):", flush=True)
    throughput = {t: measure_throughput(embedder, corpora, t, args.repeats) for t in threads}
    print(f"query path: {args.questions} distinct questions, one per call", flush=True)
    qs = questions(merchants, args.questions + 20, rng)
    query = {t: measure_queries(embedder, qs, t) for t in threads}
    contended: dict = {}
    if args.contended_questions:
        print(f"query path with one busy process beside it: {args.contended_questions} "
              f"questions", flush=True)
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1)
            subset = qs[:20 + args.contended_questions]
            contended = {t: measure_queries(embedder, subset, t) for t in threads}
        finally:
            burner.kill()
            burner.wait()
    torch.set_num_threads(default_threads)
    saved = incremental(specs, random.Random(args.seed + 1))

    # ---- the table ----
    print()
    loads = [x["load_s"] for x in load]
    firsts = [x["first_embed_s"] for x in load]
    print(f"model load (import + weights, fresh process): median {statistics.median(loads):.2f} s"
          f" (runs {', '.join(f'{x:.2f}' for x in loads)}); first embed after load "
          f"median {statistics.median(firsts) * 1000:.0f} ms")
    print(f"\n{'texts/s':<44}" + "".join(f"{'batch ' + str(b):>10}" for b in BATCH_SIZES)
          + f"{'load avg':>10}")
    for t in threads:
        for name in corpora:
            label = f"{name} (mean {stats[name]['mean']} tok), {t} thread(s)"
            rows = throughput[t][name]
            print(f"{label:<44}" + "".join(f"{rows[b]['texts_per_s']:>10,.1f}"
                                           for b in BATCH_SIZES)
                  + f"{statistics.fmean(r['loadavg_1m'] for r in rows.values()):>10.1f}")
    print(f"\n{'query embedding, one question per call, ms':<44}{'p50':>8}{'p95':>8}{'p99':>8}"
          f"{'max':>8}{'load avg':>10}")
    for t in threads:
        q = query[t]
        label = f"{t} thread(s), n={q['n']}"
        print(f"{label:<44}{q['p50']:>8}{q['p95']:>8}{q['p99']:>8}"
              f"{q['max']:>8}{q['loadavg_1m']:>10.1f}")
    for t, q in contended.items():
        label = f"{t} thread(s), one busy process beside, n={q['n']}"
        print(f"{label:<44}{q['p50']:>8}{q['p95']:>8}{q['p99']:>8}"
              f"{q['max']:>8}{q['loadavg_1m']:>10.1f}")
    print_incremental(saved)

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python bench/retrieval_embeddings.py", *sys.argv[1:]]),
        "model": MODEL, "model_version": embedder.version, "torch": torch.__version__,
        "torch_default_threads": default_threads, "cpus": os.cpu_count(),
        "chunking": SPEC.name, "load_runs": load, "corpora": stats,
        "throughput_by_threads": throughput, "query_embedding_ms_by_threads": query,
        "query_embedding_ms_by_threads_one_busy_process_beside": contended,
        "incremental": saved,
        "note": "the machine is shared; loadavg_1m is the 1-minute load average around each "
                "measurement (2 cores: above 2 means other processes competed for the CPU)",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

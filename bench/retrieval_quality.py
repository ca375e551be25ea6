"""Retrieval quality on the labelled questions: recall@5 and MRR per language, kNN alone
("before") and hybrid ("after", kNN + full-text fused by reciprocal rank).

1. The labelled corpus (``mercury.retrieval.rebuild.labelled_corpus``: the generator's default
   documents, 20 card policies and 40 merchant help pages) indexed into a temporary local
   version by the indexer's own path (``DocumentApplier``) with ``--model`` (default
   all-MiniLM-L6-v2, offline).
2. Every question of ``mercury/retrieval/eval_queries.yaml`` searched twice on that version,
   exactly as the rebuild gate does (``rebuild.score_queries``): without the question's words
   (kNN only) and with them (hybrid).
3. recall@5 and MRR overall, per language asked in, per document type of the answer, and the
   questions each mode misses.

Results: bench/results/retrieval_quality.json.
Usage: python bench/retrieval_quality.py [--model all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "retrieval_quality.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from mercury.config import LocalVectorConfig
    from mercury.retrieval.chunking import ChunkingSpec
    from mercury.retrieval.embedding import open_embedder
    from mercury.retrieval.indexer import DocumentApplier
    from mercury.retrieval.local_index import LocalVectorIndex
    from mercury.retrieval.rebuild import (
        labelled_corpus,
        load_queries,
        score_queries,
        start_version,
        summarise,
    )

    load_before = os.getloadavg()
    embedder = open_embedder(args.model)
    documents = labelled_corpus()
    queries = load_queries()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
        index = LocalVectorIndex(LocalVectorConfig(path=Path(work)))
        spec = start_version(index, "knowledge", embedder, ChunkingSpec(), 1_795_000_000_000)
        t0 = time.perf_counter()
        DocumentApplier(index, spec.alias, lambda _name: embedder).apply(documents, [spec])
        index.optimize(spec.name)
        print(f"indexed {len(documents)} documents with {embedder.label} in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        modes = {}
        for mode, use_words in (("knn", False), ("hybrid", True)):
            t0 = time.perf_counter()
            scores = score_queries(index, spec, embedder, queries, hybrid=use_words)
            seconds = time.perf_counter() - t0
            summary = summarise(queries, scores)
            for doc_type in ("CARD_POLICY", "MERCHANT_HELP"):
                prefix = "policy-" if doc_type == "CARD_POLICY" else "merchant-"
                picked = [(q, s) for q, s in zip(queries, scores, strict=True)
                          if all(d.startswith(prefix) for d in q.relevant)]
                summary[doc_type] = summarise([q for q, _ in picked],
                                              [s for _, s in picked])["all"]
            missed = [{"language": q.language, "question": q.question,
                       "relevant": list(q.relevant)}
                      for q, s in zip(queries, scores, strict=True) if s[0] < 1.0]
            modes[mode] = {"summary": summary, "missed": missed,
                           "seconds_for_all_questions": round(seconds, 2)}
        index.close()

    print(f"\n{'':<14}{'kNN recall@5':>14}{'MRR':>8}{'hybrid recall@5':>17}{'MRR':>8}"
          f"{'questions':>11}")
    for group in ("all", "en", "fr", "de", "es", "CARD_POLICY", "MERCHANT_HELP"):
        knn, both = modes["knn"]["summary"][group], modes["hybrid"]["summary"][group]
        print(f"{group:<14}{knn['recall_at_5']:>14.3f}{knn['mrr']:>8.3f}"
              f"{both['recall_at_5']:>17.3f}{both['mrr']:>8.3f}{both['queries']:>11}")
    for mode in modes:
        print(f"\n{mode}: {len(modes[mode]['missed'])} questions not fully answered in the top 5")
        for miss in modes[mode]["missed"]:
            print(f"  [{miss['language']}] {miss['question']}  -> {miss['relevant']}")

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python bench/retrieval_quality.py", *sys.argv[1:]]),
        "model": embedder.label, "documents": len(documents), "questions": len(queries),
        "k": 5, "modes": modes,
        "cpus": os.cpu_count(), "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""``mercury knowledge ...``: the knowledge index on the command line.

  index [--follow]        apply document changes from the event log to the maintained versions
  indexer start|stop|status   the supervised background indexer
  rebuild [--model M] [--max-tokens N] [--overlap N]   build, evaluate, swap only if as good
  rollback                point the alias back at the previous version
  status                  the alias, its versions, the indexer's heartbeat and lag
  search QUESTION [--language L] [--doc-type T] [--merchant M] [-k K]
"""

from __future__ import annotations

import argparse
import sys
import time

from mercury.errors import CommandError


def register(subparsers) -> argparse.ArgumentParser:
    knowledge = subparsers.add_parser("knowledge", help="the RAG knowledge index")
    actions = knowledge.add_subparsers(dest="knowledge_action", required=True, metavar="ACTION")

    index = actions.add_parser("index", help="apply document changes to the index versions")
    index.add_argument("--follow", action="store_true", help="keep consuming until stopped")
    index.set_defaults(run=_index)

    indexer = actions.add_parser("indexer", help="start, stop or check the background indexer")
    indexer.add_argument("action", choices=("start", "stop", "status"))
    indexer.set_defaults(run=_indexer)

    rebuild = actions.add_parser("rebuild", help="build a new version; swap only if as good")
    rebuild.add_argument("--model", default=None, help="embedding model (default from config)")
    rebuild.add_argument("--max-tokens", type=int, default=None)
    rebuild.add_argument("--overlap", type=int, default=None)
    rebuild.set_defaults(run=_rebuild)

    rollback = actions.add_parser("rollback", help="serve the previous version again")
    rollback.set_defaults(run=_rollback)

    status = actions.add_parser("status", help="alias, versions, indexer heartbeat and lag")
    status.set_defaults(run=_status)

    search = actions.add_parser("search", help="retrieve the top chunks for a question")
    search.add_argument("question")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--language")
    search.add_argument("--doc-type", choices=("CARD_POLICY", "MERCHANT_HELP"))
    search.add_argument("--merchant")
    search.set_defaults(run=_search)
    return knowledge


def _settings():
    from mercury.config import load_settings

    return load_settings()


def _index(args) -> int:
    from mercury.retrieval.service import run_indexer, stop_on_signals

    def progress(status) -> None:
        print(f"indexer: read {status.read:,}, applied {status.applied:,}, stale "
              f"{status.stale:,}, embedded {status.chunks_embedded:,} chunks (reused "
              f"{status.chunks_reused:,}), dead letters {sum(status.dead_lettered.values()):,}",
              file=sys.stderr, flush=True)

    status = run_indexer(_settings(), follow=args.follow, stop=stop_on_signals(),
                         progress=progress)
    progress(status)
    return 0


def _indexer(args) -> int:
    from mercury.retrieval.supervisor import KnowledgeIndexer, indexer_health

    settings = _settings()
    component = KnowledgeIndexer(settings)
    if args.action == "start":
        print(component.ensure_up().line())
    elif args.action == "stop":
        print(component.stop())
    else:
        health = indexer_health(settings)
        print(health.line())
        return 0 if health.ok else 1
    return 0


def _rebuild(args) -> int:
    from mercury.retrieval.chunking import ChunkingSpec
    from mercury.retrieval.embedding import open_embedder
    from mercury.retrieval.factory import open_index
    from mercury.retrieval.index import VectorIndexError
    from mercury.retrieval.rebuild import rebuild

    settings = _settings()
    cfg = settings.retrieval
    chunking = ChunkingSpec(args.max_tokens or cfg.max_tokens,
                            cfg.overlap_tokens if args.overlap is None else args.overlap)
    embedder = open_embedder(args.model or cfg.embedding_model, cfg.embed_batch_size)
    try:
        outcome = rebuild(settings, open_index(cfg), embedder, chunking,
                          created_at_ms=int(time.time() * 1000), log=_err)
    except VectorIndexError as exc:
        raise CommandError(str(exc)) from exc
    print(outcome.summary())
    return 0 if outcome.decision.swap else 2


def _rollback(args) -> int:
    from mercury.retrieval.factory import open_index
    from mercury.retrieval.index import VectorIndexError

    cfg = _settings().retrieval
    try:
        target = open_index(cfg).rollback_alias(cfg.alias)
    except VectorIndexError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{cfg.alias} -> {target}")
    return 0


def _status(args) -> int:
    from mercury.retrieval.factory import open_index
    from mercury.retrieval.supervisor import indexer_health

    settings = _settings()
    index = open_index(settings.retrieval)
    alias = settings.retrieval.alias
    target = index.alias_target(alias)
    print(f"alias {alias} -> {target or '(none)'}")
    for spec in index.versions(alias):
        mark = "*" if spec.name == target else " "
        print(f" {mark} {spec.name:<70} {spec.state:<9} {spec.embedding_model}@"
              f"{spec.embedding_version} {spec.chunking}")
    print(indexer_health(settings).line())
    return 0


def _search(args) -> int:
    from mercury.retrieval.factory import open_index
    from mercury.retrieval.index import SearchFilter, VectorIndexError
    from mercury.retrieval.retriever import Retriever
    from mercury.retrieval.service import embedder_cache

    cfg = _settings().retrieval
    retriever = Retriever(open_index(cfg), cfg.alias, embedder_cache(cfg.embed_batch_size))
    filters = SearchFilter(args.language, args.doc_type, args.merchant)
    try:
        result = retriever.retrieve(args.question, args.k, filters)
    except VectorIndexError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{result.version.name} ({result.version.embedding_model})")
    for hit in result.hits:
        print(f"{hit.score:.3f}  {hit.doc_id:<32} {hit.heading[:40]:<40} {hit.source_url}")
        print(f"       {hit.text[:120]}")
    return 0


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

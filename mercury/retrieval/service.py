"""The incremental indexer as a long-running consumer of ``knowledge_documents``.

Each batch: poll, validate (``documents``), dead-letter the rejects with their rule, apply
the rest (``indexer.DocumentApplier``), flush the dead letters, then commit the offsets. The
order makes it at-least-once; the ledger makes the repeats harmless. A status file is
rewritten after every batch and every idle poll, so a supervisor sees a heartbeat even when
no document changes.

SIGTERM and SIGINT finish the current batch, then stop: offsets are never committed for work
that was not written.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import cache

from mercury.config import Settings
from mercury.contracts import registry
from mercury.eventlog.factory import open_consumer, open_producer
from mercury.quality.dead_letters import encode, make_dead_letter
from mercury.retrieval.documents import STREAM, Document, Rejected, parse_change
from mercury.retrieval.embedding import Embedder, open_embedder
from mercury.retrieval.index import VectorIndex, open_index
from mercury.retrieval.indexer import (
    GROUP,
    DocumentApplier,
    IndexerStatus,
    now_ms,
    status_path,
)


def embedder_cache(batch_size: int) -> Callable[[str], Embedder]:
    """One loaded model per name for the life of the process (loading MiniLM takes ~20 s)."""
    return cache(lambda name: open_embedder(name, batch_size))


def run_indexer(settings: Settings, *, follow: bool = False, batch_size: int = 256,
                idle_sleep_s: float = 0.2, stop: threading.Event | None = None,
                index: VectorIndex | None = None,
                embedder_for: Callable[[str], Embedder] | None = None,
                progress: Callable[[IndexerStatus], None] | None = None) -> IndexerStatus:
    """Index what the stream holds; with ``follow``, keep going until ``stop`` is set."""
    cfg = settings.retrieval
    index = index or open_index(cfg)
    embedder_for = embedder_for or embedder_cache(cfg.embed_batch_size)
    for spec in index.maintained(cfg.alias):
        # Load the models before the first heartbeat, not on the first change: a change
        # should wait for a batch, never for a model load (~20 s for MiniLM here).
        embedder_for(spec.embedding_model).embed(["warm-up"])
    applier = DocumentApplier(index, cfg.alias, embedder_for)
    dead_letter_stream = registry.stream(STREAM).dead_letter_stream
    status = IndexerStatus(started_at_ms=now_ms())
    path = status_path(settings.data_dir)
    stop = stop or threading.Event()
    with open_consumer(settings, GROUP, [STREAM]) as consumer, \
            open_producer(settings, writer_id="indexer") as producer:
        while not stop.is_set():
            batch = consumer.poll(max_messages=batch_size, timeout_s=idle_sleep_s)
            if not batch:
                status.heartbeat_ms = now_ms()
                status.save(path)
                if not follow:
                    break
                stop.wait(idle_sleep_s)
                continue
            documents: list[Document] = []
            rejected: Counter = Counter()
            for message in batch:
                parsed = parse_change(message.value, cfg.languages, cfg.max_body_chars)
                if isinstance(parsed, Rejected):
                    letter = make_dead_letter(STREAM, message.position, message.value,
                                              parsed.verdict, now_ms())
                    producer.send(dead_letter_stream, encode(letter), key=letter["dlq_id"])
                    rejected[parsed.verdict.rule] += 1
                else:
                    documents.append(parsed)
            stats = applier.apply(documents)
            producer.flush()   # dead letters durable,
            consumer.commit()  # then the batch is done
            newest = max((d.updated_at for d in documents), default=None)
            status.add(len(batch), stats, rejected, newest, now_ms())
            status.save(path)
            if progress is not None:
                progress(status)
    return status


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_until(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()

"""The incremental indexer as a long-running consumer of ``knowledge_documents``.

Each batch: poll, validate (``documents``), dead-letter the rejects with their rule, apply
the rest (``indexer.DocumentApplier``), flush the dead letters, then commit the offsets. The
order makes it at-least-once; the ledger makes the repeats harmless. A status file is
rewritten after every batch and every idle poll, so a supervisor sees a heartbeat even when
no document changes.

Index upkeep (compaction, folding new rows into the vector index) runs here, in the loop,
when a poll comes back empty: a window without writes, because the upkeep holds the index's
writer lock and a change that arrives meanwhile waits for it. One version per idle poll, then
the loop polls again, so waiting changes go first. When polls never come back empty the
upkeep would never run and fragments pile up; once a version is ``overdue`` it runs between
batches instead (the next batch waits for one upkeep). Why it left the background thread:
see "Upkeep" in ``local_index``. During an upkeep, which takes about a minute at 100K chunks,
a helper thread keeps the heartbeat fresh and the status names the version in upkeep.

SIGTERM and SIGINT finish the current batch, then stop: offsets are never committed for work
that was not written.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from mercury.config import Settings
from mercury.contracts import registry
from mercury.eventlog.factory import encode_record, open_consumer, open_producer, writer_schemas
from mercury.quality.dead_letters import make_dead_letter
from mercury.retrieval.documents import STREAM, Document, Rejected, parse_change
from mercury.retrieval.embedding import Embedder, open_embedder
from mercury.retrieval.factory import open_index
from mercury.retrieval.index import VectorIndex
from mercury.retrieval.indexer import (
    GROUP,
    DocumentApplier,
    IndexerStatus,
    now_ms,
    status_path,
)
from mercury.retrieval.indexer_metrics import IndexerMetrics

log = logging.getLogger(__name__)
UPKEEP_HEARTBEAT_S = 5.0  # under the supervisor's 30 s staleness limit


def embedder_cache(batch_size: int, threads: int | None = None) -> Callable[[str], Embedder]:
    """One loaded model per name for the life of the process (loading MiniLM takes ~20 s).
    ``threads``: see ``open_embedder`` (process-wide; the indexer keeps torch's default)."""
    return cache(lambda name: open_embedder(name, batch_size, threads))


def run_indexer(settings: Settings, *, follow: bool = False, batch_size: int = 256,
                idle_sleep_s: float = 0.2, stop: threading.Event | None = None,
                index: VectorIndex | None = None,
                embedder_for: Callable[[str], Embedder] | None = None,
                progress: Callable[[IndexerStatus], None] | None = None) -> IndexerStatus:
    """Index what the stream holds; with ``follow``, keep going until ``stop`` is set."""
    cfg = settings.retrieval
    schemas_by_id = writer_schemas(settings)
    index = index or open_index(cfg)
    embedder_for = embedder_for or embedder_cache(cfg.embed_batch_size)
    for spec in index.maintained(cfg.alias):
        # Load the models before the first heartbeat, not on the first change: a change
        # should wait for a batch, never for a model load (~20 s for MiniLM here).
        embedder_for(spec.embedding_model).embed(["warm-up"])
    applier = DocumentApplier(index, cfg.alias, embedder_for)
    # The knowledge stream has its dead-letter stream (the registry's check).
    dead_letter_stream = str(registry.stream(STREAM).dead_letter_stream)
    status = IndexerStatus(started_at_ms=now_ms())
    path = status_path(settings.data_dir)
    metrics = IndexerMetrics(settings.metrics_dir, STREAM)
    stop = stop or threading.Event()
    with open_consumer(settings, GROUP, [STREAM]) as consumer, \
            open_producer(settings, writer_id="indexer") as producer:
        while not stop.is_set():
            batch = consumer.poll(max_messages=batch_size, timeout_s=idle_sleep_s)
            if not batch:
                status.heartbeat_ms = now_ms()
                status.save(path)
                metrics.beat(status.heartbeat_ms)
                ran = run_due_upkeep(index, cfg.alias, status, path, overdue=False)
                if not follow:
                    if ran:
                        continue  # poll again: more changes, or another version's upkeep
                    break
                if not ran:
                    stop.wait(idle_sleep_s)
                continue
            documents: list[Document] = []
            rejected: Counter = Counter()
            for message in batch:
                parsed = parse_change(message.value, cfg.languages, cfg.max_body_chars,
                                      schemas_by_id)
                if isinstance(parsed, Rejected):
                    letter = make_dead_letter(STREAM, message.position, message.value,
                                              parsed.verdict, now_ms())
                    producer.send(dead_letter_stream,
                                  encode_record(settings, dead_letter_stream, letter),
                                  key=letter["dlq_id"])
                    rejected[parsed.verdict.rule] += 1
                else:
                    documents.append(parsed)
            stats = applier.apply(documents)
            producer.flush()   # dead letters durable,
            consumer.commit()  # then the batch is done
            newest = max((d.updated_at for d in documents), default=None)
            status.add(len(batch), stats, rejected, newest, now_ms())
            status.save(path)
            metrics.batch(len(batch), rejected, (d.updated_at for d in documents),
                          status.heartbeat_ms)
            if progress is not None:
                progress(status)
            run_due_upkeep(index, cfg.alias, status, path, overdue=True)
    return status


def run_due_upkeep(index: VectorIndex, alias: str, status: IndexerStatus, path: Path, *,
                   overdue: bool) -> bool:
    """Runs the upkeep of the first maintained version that needs it; True if one ran
    (or failed: a failure is logged and the engine does not offer it again for a while)."""
    for spec in index.maintained(alias):
        if not index.maintenance_due(spec.name, overdue=overdue):
            continue
        started = time.perf_counter()
        with _beating(status, path, spec.name):
            try:
                index.run_upkeep(spec.name)
            except Exception as exc:  # upkeep must never stop the indexing
                status.last_error = f"upkeep of {spec.name}: {type(exc).__name__}: {exc}"
                log.warning("%s", status.last_error)
            else:
                status.upkeeps += 1
                status.last_upkeep_s = round(time.perf_counter() - started, 3)
        return True
    return False


@contextmanager
def _beating(status: IndexerStatus, path: Path, version: str) -> Iterator[None]:
    """Keeps the heartbeat fresh while the loop's thread is busy with an upkeep; the status
    says which version, so a slow heartbeat can be told from a hung process."""
    status.upkeep_running, status.upkeep_started_ms = version, now_ms()
    status.heartbeat_ms = now_ms()
    status.save(path)
    done = threading.Event()

    def beat() -> None:
        while not done.wait(UPKEEP_HEARTBEAT_S):
            status.heartbeat_ms = now_ms()
            status.save(path)

    beater = threading.Thread(target=beat, name="upkeep-heartbeat", daemon=True)
    beater.start()
    try:
        yield
    finally:
        done.set()
        beater.join()
        status.upkeep_running = status.upkeep_started_ms = None
        status.heartbeat_ms = now_ms()
        status.save(path)


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

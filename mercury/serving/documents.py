"""Document chunks for a question, within a deadline, behind a breaker and a bulkhead.

Embedding a question and searching the index are blocking calls (torch, LanceDB or
opensearch-py), so they run on one dedicated thread per process: the Retriever's caches are
then used by one thread only, and the event loop stays free. A thread cannot be cancelled, so
a call that misses its deadline keeps the thread busy until it returns. The bulkhead
(``max_waiting``) refuses new work while that many calls are pending, and the breaker stops
sending work to an index that keeps failing: the answer then goes out on time without
documents, flagged. When this process itself is saturated (its event loop lags), the request
is shed instead (``Overloaded``: a 503 the load balancer retries elsewhere).

Repeated questions ("why was my card declined?") are answered from a result cache kept on
the event loop's side, so a cache hit never waits behind a search on the retrieval thread.
It lives ``result_ttl_s`` (10 s, as the Retriever's own cache), so a document change or an
alias swap shows within that long.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mercury.retrieval.index import SearchFilter
from mercury.serving.admission import Overloaded
from mercury.serving.breaker import CircuitBreaker, judge_timeout

if TYPE_CHECKING:
    from mercury.retrieval.retriever import Retriever
    from mercury.serving.overload import LoopMonitor


@dataclass(frozen=True)
class Documents:
    chunks: list[dict[str, Any]]
    index_version: str | None
    embedding_model: str | None
    cached: bool


# Document types the intent table filters on (mercury.serving.intent), warmed up one by one.
WARM_DOC_TYPES = ("CARD_POLICY", "MERCHANT_HELP")


class DocumentFetcher:
    def __init__(self, retriever_factory: Callable[[], Retriever], breaker: CircuitBreaker,
                 max_waiting: int = 4, monitor: LoopMonitor | None = None,
                 cache_size: int = 1024, result_ttl_s: float = 10.0,
                 languages: tuple[str, ...] = (), store_deadline_s: float = 0.050,
                 crowded: Callable[[], bool] = lambda: False) -> None:
        self._factory = retriever_factory  # called once, on the retrieval thread
        self._retriever: Retriever | None = None
        self.breaker = breaker
        self.max_waiting = max_waiting
        self.monitor = monitor  # LoopMonitor: tells a slow index from a saturated process
        self.cache_size = cache_size
        self.result_ttl_s = result_ttl_s
        self.languages = languages
        self.store_deadline_s = store_deadline_s
        self.crowded = crowded  # every admission slot taken (``Admission.crowded``)
        # (question, filters, k) -> (when, answer); touched by the event loop only
        self._answers: OrderedDict[tuple[str, SearchFilter, int], tuple[float, Documents]] = \
            OrderedDict()
        self._waiting = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval")

    def warm_up(self) -> Future[None]:
        """Load the model and resolve the alias on the retrieval thread (readiness waits)."""
        return self._executor.submit(self._warm)

    def _warm(self) -> None:
        # The first calls after a model load or an index open are several times slower than
        # the steady state (lazy initialisation in torch and the engine), and so is the first
        # search under each filter (the engine plans and caches a prefilter per predicate):
        # pay them all here, before readiness, so the first real question is on time.
        retriever = self._get()
        for question in ("warm up", "warming up the index", "ready to serve"):
            retriever.retrieve(question, k=1)
        for language in (None, *self.languages):
            for doc_type in (None, *WARM_DOC_TYPES):
                retriever.retrieve("why was my card declined", k=5,
                                   filters=SearchFilter(language=language, doc_type=doc_type))

    def _get(self) -> Retriever:
        if self._retriever is None:
            self._retriever = self._factory()
        return self._retriever

    def _search(self, question: str, k: int, filters: SearchFilter) -> Documents:
        result = self._get().retrieve(question, k=k, filters=filters)
        chunks = [{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "title": h.title,
                   "heading": h.heading, "url": h.source_url, "text": h.text,
                   "score": round(float(h.score), 4)} for h in result.hits]
        spec = result.version
        return Documents(chunks, spec.name, f"{spec.embedding_model}@{spec.embedding_version}",
                         result.result_cached)

    async def fetch(self, question: str, k: int, filters: SearchFilter, deadline_s: float
                    ) -> tuple[Documents | None, str | None]:
        """The chunks, or None and why not."""
        key = (" ".join(question.split()), filters, k)
        hit = self._answers.get(key)
        if hit is not None and time.monotonic() - hit[0] <= self.result_ttl_s:
            self._answers.move_to_end(key)
            return Documents(hit[1].chunks, hit[1].index_version, hit[1].embedding_model,
                             cached=True), None
        if self._waiting >= self.max_waiting:
            # Before the breaker: a refused call must not hold its trial. Every retrieval slot
            # is taken. On a lagging loop this process is saturated: the request goes
            # elsewhere. On a healthy one the index is slow: answer without documents, flagged.
            if self.monitor is not None and self.monitor.overloaded:
                raise Overloaded(f"{self._waiting} searches wait for the retrieval thread")
            return None, "busy"
        if not self.breaker.allow():
            return None, "breaker_open"
        self._waiting += 1
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._search, question, k, filters)
        future.add_done_callback(self._done)
        try:
            started = time.perf_counter()
            found = await asyncio.wait_for(asyncio.shield(future), deadline_s)
        except TimeoutError:
            return None, judge_timeout(self.breaker, self.monitor, deadline_s,
                                       self.store_deadline_s, time.perf_counter() - started,
                                       "search", self.crowded())
        except Exception as exc:  # noqa: BLE001 - an index failure degrades, never a 500
            self.breaker.failure()
            return None, type(exc).__name__
        self.breaker.success()
        if self.cache_size > 0:
            self._answers[key] = (time.monotonic(), found)
            self._answers.move_to_end(key)
            while len(self._answers) > self.cache_size:
                self._answers.popitem(last=False)
        return found, None

    def _done(self, future: asyncio.Future[Documents]) -> None:
        self._waiting -= 1
        if not future.cancelled():
            future.exception()  # retrieved, so a late failure is not logged as unhandled

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

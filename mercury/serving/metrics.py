"""Prometheus metrics of the context API (``GET /metrics``).

Latency histograms per stage (buckets around the 60 ms budget), degraded parts and their
reasons, breaker states, cache hits, refusals, and the audit spool's backlog. With several
uvicorn workers each process exports its own; production scrapes pods, one process each.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 150, 250, 500, 1000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("context_requests_total", "Context requests by outcome",
                                ["intent", "status"], registry=r)
        self.stage_ms = Histogram("context_stage_latency_ms", "Latency of each stage (ms)",
                                  ["stage"], buckets=_BUCKETS_MS, registry=r)
        self.degraded = Counter("context_degraded_parts_total",
                                "Parts answered from a fallback or left out",
                                ["part", "fallback", "reason"], registry=r)
        self.refused = Counter("context_refused_total", "Requests refused before any fetch",
                               ["reason"], registry=r)
        self.cache_hits = Counter("context_cache_hits_total", "Cache hits by cache",
                                  ["cache"], registry=r)
        self.breaker_open = Gauge("context_breaker_open", "1 while a breaker is not closed",
                                  ["source"], registry=r)
        self.audit_backlog = Gauge("context_audit_spool_backlog_bytes",
                                   "Audit bytes spooled and not yet shipped", registry=r)
        self.audit_shipped = Gauge("context_audit_shipped_total",
                                   "Audit records shipped by this process", registry=r)
        # An alert when above 0: a record the stream cannot take was kept aside (docs/SERVING.md)
        self.audit_quarantined = Gauge("context_audit_quarantined_total",
                                       "Audit records quarantined (broke their contract, too "
                                       "large, or a torn spool line)", registry=r)
        self.admission_in_flight = Gauge("context_admission_in_flight",
                                         "Requests being answered by this process", registry=r)
        self.shed = Gauge("context_admission_shed_total",
                          "Requests shed (503) because no slot was free in time", registry=r)
        self.loop_lag = Gauge("context_event_loop_lag_ms",
                              "Smoothed lateness of the event loop (overload signal)",
                              registry=r)
        self.outcomes = Counter("context_safety_outcomes_total", "Safety outcomes reported",
                                ["outcome"], registry=r)

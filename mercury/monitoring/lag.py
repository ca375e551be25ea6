"""Consumer lag, measured when Prometheus scrapes: for each consumer group that reads the event
log, the messages of its stream it has not committed (``mercury.eventlog.group_lag``: lines
past the committed positions on the file log, high watermark minus committed offset summed
over partitions on Kafka), as ``mercury_consumer_lag_messages{group,stream}``.

Measured at scrape time, not pushed by the consumers, because a stopped consumer is the case
that matters and a stopped consumer pushes nothing. Served by the freshness probe's process
(``mercury monitor probe``), the one long-running process the monitoring owns.

The groups are ``monitoring.consumer_groups``: the ones that run (a group nobody runs would
only ever lag). The streaming job is not there: Flink keeps its positions in its checkpoints,
not in a group (the freshness probe and Flink's own reporter watch it). On the file log each
scrape counts the streams' lines: a read of the log's files every scrape interval.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mercury.config import Settings

log = logging.getLogger(__name__)


class ConsumerLagCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        from mercury.contracts import registry

        for group, stream in settings.monitoring.consumer_groups.items():
            try:
                registry.stream(stream)
            except KeyError as exc:
                raise ValueError(f"monitoring.consumer_groups[{group!r}]: {exc.args[0]}") \
                    from None
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from mercury.eventlog import group_lag

        lag = GaugeMetricFamily("mercury_consumer_lag_messages",
                                "Messages of the stream the group has not committed",
                                labels=["group", "stream"])
        for group, stream in self.settings.monitoring.consumer_groups.items():
            try:
                lag.add_metric([group, stream], group_lag(self.settings, group, [stream]))
            except Exception as exc:  # noqa: BLE001 - one unreachable group hides no other
                log.warning("consumer lag of %s on %s: %s: %s", group, stream,
                            type(exc).__name__, exc)
        yield lag

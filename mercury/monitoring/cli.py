"""``mercury monitor probe``: run the freshness probe (mercury.monitoring.probe) and serve its
metrics on ``monitoring.probe_port`` for Prometheus, with the consumer groups' lag
(mercury.monitoring.lag), printing each canary's lag as it lands."""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    monitor = subparsers.add_parser("monitor", help="the freshness probe")
    actions = monitor.add_subparsers(dest="monitor_action", required=True, metavar="ACTION")
    probe = actions.add_parser("probe", help="write canaries, export their freshness")
    probe.add_argument("--seconds", type=float, default=None,
                       help="stop after this long (default: until interrupted)")
    probe.set_defaults(run=_probe)
    return monitor


def _probe(args) -> int:
    import threading

    from prometheus_client import CollectorRegistry, start_http_server

    from mercury.config import load_settings
    from mercury.eventlog import open_producer
    from mercury.monitoring.lag import ConsumerLagCollector
    from mercury.monitoring.probe import FreshnessProbe
    from mercury.online.factory import open_store

    settings = load_settings()
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(settings))  # measured at each scrape
    stop = threading.Event()
    if args.seconds is not None:
        timer = threading.Timer(args.seconds, stop.set)
        timer.daemon = True  # an interrupted probe exits without waiting for it
        timer.start()
    port = settings.monitoring.probe_port
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    print(f"freshness probe: a canary every {settings.monitoring.probe_interval_s:g} s; "
          f"metrics on http://127.0.0.1:{port}/metrics", flush=True)
    with open_producer(settings, writer_id="canary") as producer:
        probe = FreshnessProbe(settings, producer, open_store(settings), registry)
        try:
            probe.run(stop, on_observed=lambda lags: print(
                "canary lag " + ", ".join(f"{lag * 1000:.0f} ms" for lag in lags), flush=True))
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
    return 0

"""Bring the local stack up, report on it, take it down."""

from __future__ import annotations

from mercury.config import Settings
from mercury.stack.base import Component, Health, StackError

COMPONENT_NAMES = ("redis", "postgres", "flink", "airflow", "node-exporter", "alertmanager",
                   "prometheus")


def components(settings: Settings, only: list[str] | None = None) -> list[Component]:
    from mercury.stack.airflow_standalone import AirflowStandalone
    from mercury.stack.flink_cluster import FlinkCluster
    from mercury.stack.monitoring_servers import (
        AlertmanagerServer,
        PrometheusServer,
        TextfileExporter,
    )
    from mercury.stack.postgres_server import PostgresServer
    from mercury.stack.redis_server import RedisServer

    all_components = [RedisServer(settings), PostgresServer(settings), FlinkCluster(settings),
                      AirflowStandalone(settings), TextfileExporter(settings),
                      AlertmanagerServer(settings), PrometheusServer(settings)]
    if only:
        unknown = set(only) - set(COMPONENT_NAMES)
        if unknown:
            raise StackError(f"unknown component(s) {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(COMPONENT_NAMES)}")
        return [c for c in all_components if c.name in only]
    return all_components


def up(settings: Settings, only: list[str] | None = None, echo=print) -> list[Health]:
    if settings.profile != "local":
        raise StackError("the local stack runs only with MERCURY_PROFILE=local")
    report = []
    for component in components(settings, only):
        echo(f"starting {component.name} ...")
        health = component.ensure_up()
        echo(health.line())
        report.append(health)
    return report


def status(settings: Settings, only: list[str] | None = None) -> list[Health]:
    return [component.health() for component in components(settings, only)]


def down(settings: Settings, only: list[str] | None = None) -> list[str]:
    return [component.stop() for component in reversed(components(settings, only))]

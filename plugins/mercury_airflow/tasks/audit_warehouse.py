"""The audit_warehouse DAG's steps: thin glue over ``mercury.lake.load`` and dbt.

- ``load_audit_stream``: validate what a stream received since the last run into its lake
  table (consumer-group offsets; upsert by request_id; invalid records dead-lettered). A
  retry or a second run re-reads at most the uncommitted batch, which changes nothing.
- ``build_compliance_models``: ``dbt build`` of everything built on the audit lake tables
  (staging, the compliance facts and view, their data and unit tests) on the configured
  target: DuckDB locally, Snowflake in production.

Each prints one line per step and returns plain values for XCom. Importing this module is
cheap: mercury.lake and dbt are imported by the functions that use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mercury_airflow.tasks import log_line

if TYPE_CHECKING:
    from mercury.config import Settings

Log = Callable[[str], None]

AUDIT_STREAMS = ("inference_audit", "assistant_safety_outcomes")
# Everything downstream of the audit lake tables: the two staging models, the compliance
# facts, compliance_assistant_context, and their tests.
COMPLIANCE_SELECTION = "source:audit+"


def load_audit_stream(settings: Settings, stream: str, *, log: Log = log_line) -> dict[str, Any]:
    """Load one audit stream into its lake table; the load report as a dict."""
    from mercury.lake.load import load_stream

    if stream not in AUDIT_STREAMS:
        raise ValueError(f"{stream!r} is not an audit stream ({', '.join(AUDIT_STREAMS)})")
    report = load_stream(settings, stream)
    log(report.summary())
    return {"stream": stream, "read": report.read, "valid": report.valid,
            "inserted": report.inserted, "dead_letters": dict(report.dead_letters)}


def build_compliance_models(settings: Settings, *, log: Log = log_line) -> dict[str, Any]:
    """``dbt build --select source:audit+`` on the configured target; raises (naming the
    failed nodes) when a model or an error-severity test fails. Warnings (an outcome whose
    request has not arrived yet, an unknown intent) are logged, not failures."""
    from mercury.warehouse.dbt_runner import run_dbt

    target = settings.warehouse.dbt_target
    result = run_dbt(["build", "--select", COMPLIANCE_SELECTION], target=target,
                     settings=settings)
    log(result.summary())
    warned = [n.name for n in result.nodes if n.status == "warn"]
    for name in warned:
        log(f"warning: {name}")
    return {"target": target, "nodes": len(result.nodes), "warned": warned}

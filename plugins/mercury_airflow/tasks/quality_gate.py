"""The quality_gate DAG's step: the anomaly gate of one stream's closed arrival hour."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mercury.config import Settings

# The gated streams, for the DAG's task mapping (parsing a DAG imports no mercury:
# tests/test_anomaly_gate.py holds this to the default ``anomaly.streams``).
GATED_STREAMS = ("transactions", "user_activity")


def gate(settings: Settings, stream: str, hour_ms: int) -> dict[str, Any]:
    """Promote the hour or quarantine it; ``HourQuarantined`` (naming the rules and the
    release command) when it is held, for the caller to fail the task without retries."""
    from mercury.quality.hour_gate import hour_label, promote_hour

    result = promote_hour(settings, stream, hour_ms)
    verdict = result.verdict
    print(f"{stream} {hour_label(hour_ms)}: {result.status} (baseline {verdict.baseline}; "
          + ", ".join(f"{name} {value:.3f}" for name, value in verdict.measures.items())
          + ")", flush=True)
    for note in verdict.notes:
        print(f"  note: {note}", flush=True)
    return {"stream": stream, "hour_ms": hour_ms, "status": result.status,
            "measures": dict(verdict.measures)}

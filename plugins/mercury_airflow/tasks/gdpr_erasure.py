"""The gdpr_erasure DAG's steps: what is due, then erase every registered request."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mercury_airflow.tasks import log_line

if TYPE_CHECKING:
    from mercury.config import Settings

# A request still pending this close to its deadline makes the run fail loudly: on-call has
# days, not hours, to fix what blocks it (docs/runbooks).
DEADLINE_MARGIN = timedelta(days=5)


def review(settings: Settings, now: datetime) -> dict[str, Any]:
    """Pending requests and how close each is to its deadline (tickets only, no user ids)."""
    from mercury.privacy import erasure_register as register

    pending = register.pending(settings)
    for request in pending:
        log_line(f"pending {request.ticket}: requested {request.requested_at:%Y-%m-%d}, "
                 f"due {request.due_at:%Y-%m-%d} ({(request.due_at - now).days} days left)")
    return {"pending": len(pending),
            "near_deadline": [r.ticket for r in pending if r.due_at - now < DEADLINE_MARGIN]}


def erase(settings: Settings) -> dict[str, Any]:
    """Every pending request, oldest first; each is complete (evidence written) or raises."""
    from mercury.gdpr.erasure import erase_pending

    rows = erase_pending(settings, progress=log_line)
    tickets = sorted({row["ticket"] for row in rows})
    return {"erased": tickets, "removed": sum(row["removed"] for row in rows)}


def check_deadlines(reviewed: dict[str, Any], erased: dict[str, Any]) -> None:
    """Raises when a request that was near its deadline is still not erased."""
    late = sorted(set(reviewed["near_deadline"]) - set(erased["erased"]))
    if late:
        raise RuntimeError(f"erasure requests near their deadline not completed: {late} "
                           "(docs/runbooks: gdpr-erasure)")

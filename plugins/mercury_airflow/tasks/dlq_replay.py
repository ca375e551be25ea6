"""The dlq_replay DAG's steps: ``mercury.quality.replay`` for one stream, dry or for real."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mercury.config import Settings

# The streams with a dead-letter stream, for the trigger form's list (parsing a DAG imports
# no mercury: tests/test_dags.py holds this to the contracts' registry).
REPLAYABLE = ("assistant_safety_outcomes", "inference_audit", "knowledge_documents",
              "risk_signals", "transactions", "user_activity", "user_profile_cdc")


def replay(settings: Settings, stream: str, *, dry_run: bool) -> dict[str, Any]:
    """Replay ``stream``'s dead letters that pass the current contract (``dry_run``: only
    count what would come back and what still fails, per rule). Idempotent: the ledger, in
    the shared operational store, makes a retry on any worker or a second run a no-op."""
    from mercury.quality.replay import progress_printer, replay_dead_letters

    result = replay_dead_letters(settings, stream, dry_run=dry_run,
                                 progress=progress_printer(every_s=10))
    print(("dry run: " if dry_run else "") + result.summary(), flush=True)
    return result.as_dict()

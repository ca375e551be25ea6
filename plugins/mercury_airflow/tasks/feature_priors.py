"""The feature_priors DAG's step: thin glue over ``mercury.features.offline.priors``.

``publish_priors``: every compiled set's segment averages as of the end of one UTC day, from
its feature history, written to the online store under ``fs:{priors}:<set>:v<N>``.

Importing this module is cheap: mercury is imported by the functions that use it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mercury_airflow.tasks import log_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from mercury.config import Settings


def priors_day(day: str | None, data_interval_end: datetime) -> date:
    """``day`` (YYYY-MM-DD) when given, else the last whole UTC day before the data
    interval's end (a run at 03:00, or at midnight, computes yesterday)."""
    if day:
        try:
            return date.fromisoformat(day)
        except ValueError:
            raise ValueError(f"day: {day!r} is not a date YYYY-MM-DD") from None
    if data_interval_end.tzinfo is None:
        raise ValueError(f"data_interval_end {data_interval_end} has no time zone")
    return data_interval_end.astimezone(UTC).date() - timedelta(days=1)


def publish_priors(settings: Settings, day: date, *,
                   log: Callable[[str], None] = log_line) -> dict[str, Any]:
    """Compute and publish; returns ``{"day", "published": {key: written | kept <day>}}``."""
    from mercury.features.definition.compile import load_compiled
    from mercury.features.offline import priors
    from mercury.online.factory import open_store

    found = priors.from_history(settings, load_compiled(), day, log)
    with open_store(settings) as store:
        outcome = priors.publish(store, found, settings.offline.priors_ttl_s)
    for key, what in outcome.items():
        log(f"{key}: {what}")
    return {"day": day.isoformat(), "published": outcome}

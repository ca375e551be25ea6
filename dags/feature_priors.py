"""feature_priors: the context API's fallback priors, daily.

``publish``: every served feature set's numeric features averaged per segment of users (home
country x risk tier; the population's for segments under ``offline.priors_min_count``), from
the feature history as of the end of the day before the data interval's end, written to the
online store under ``fs:{priors}:<set>:v<N>`` with a TTL of ``offline.priors_ttl_s``.
Serving processes copy them into memory and answer with them (``source: prior``) when a
user's set cannot be read (docs/SERVING.md, "Fallback priors").

Runs at 04:00 UTC, after the day's history is in. Safe to retry and to run again for any day
(param ``day``): the same day rewrites the same document, an older day never replaces a newer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task
from mercury_airflow.tasks import feature_priors as steps
from mercury_airflow.tasks import settings


@task
def publish(params=None, data_interval_end=None) -> dict:
    """Segment averages of yesterday's (or ``day``'s) history, published."""
    return steps.publish_priors(settings(), steps.priors_day(params["day"], data_interval_end))


with DAG(
    dag_id="feature_priors",
    description="Segment averages of every feature set from its history, published as the "
                "context API's fallback priors",
    schedule="0 4 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["features", "serving", "batch"],
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": timedelta(minutes=10)},
    params={"day": Param(None, type=["null", "string"], format="date",
                         description="the UTC day whose end the priors are as of "
                                     "(YYYY-MM-DD); empty: yesterday")},
    doc_md=__doc__,
):
    publish()

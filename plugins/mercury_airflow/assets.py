"""Airflow Assets shared between DAGs: the producer names it in ``outlets``, a consumer in
``schedule``. Defined once here so both sides mean the same asset."""

from __future__ import annotations

from airflow.sdk import Asset

# Updated by the feature_drift DAG only when a served feature drifted past drift.psi_drift;
# the event's extra says which model versions and features ({"day", "drifted": {model:
# [feature, ...]}}). The ML team's retraining DAGs schedule on it (docs/DRIFT.md).
FEATURE_DRIFT = Asset(name="feature_drift", uri="mercury://monitoring/feature-drift")

"""Drift of served feature values against the training set of the model that used them:
PSI math (``psi``), the comparison (``measure``), its Prometheus metrics (``metrics``).
docs/DRIFT.md. Its own package: it reads both the lake and the feature definitions, which
``mercury.quality`` (imported by the lake) may not."""

"""Drift of served feature values against the training set of the model that used them:
the comparison (``measure``, with the PSI of ``mercury.quality.psi``, shared with the anomaly gate)
and its Prometheus metrics (``metrics``).
docs/DRIFT.md. Its own package: it reads both the lake and the feature definitions, which
``mercury.quality`` (imported by the lake) may not."""

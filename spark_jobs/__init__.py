"""PySpark entry points: thin, they build DataFrames from ``mercury.features``."""

"""The lake: Iceberg tables (``mercury.lake.tables``) and the local event log.

Importing this package does no I/O and pulls in no heavy dependency; import the submodule you
need (``from mercury.lake import tables``).
"""

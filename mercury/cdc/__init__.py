"""Change data capture from Postgres into the event log.

``pgoutput`` decodes the logical replication messages (pure), ``profiles`` sets up the slot and
publication, snapshots and pumps ``mercury.user_profiles`` into ``user_profile_cdc``, ``cli``
adds ``mercury cdc ...``. In production Debezium on MSK Connect does this job with the same
envelope (docs/CDC.md).
"""

"""The local stack: Redis, Postgres, a standalone Flink cluster and Airflow 3.

Each component checks its own health and says exactly what is wrong. ``up`` starts what is
down; ``down`` stops only what ``up`` started, found by the pid files in ``<data_dir>/run``.
"""

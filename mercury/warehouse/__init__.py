"""The warehouse: the dbt project in ``dbt/`` (Snowflake in production, DuckDB locally)."""

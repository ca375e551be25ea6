"""The DuckDB executor: point-in-time values of compiled feature sets as generated SQL
(``sql``), for training sets that fit one machine."""

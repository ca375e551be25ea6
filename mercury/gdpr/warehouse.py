"""Erasure in the warehouse: DuckDB locally (Snowflake in production).

Tables (not views: a view shows what its tables hold) with a user column lose the subjects'
rows. The marts are rebuilt from the lake every run anyway; deleting now means the warehouse
does not wait for the next build. Snowflake keeps deleted rows for Time Travel (set to 1 day on
these schemas) and then Fail-safe (7 days): docs/COMPLIANCE.md counts both in the 30 days.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mercury.gdpr.evidence import Removal
from mercury.gdpr.subject import Subject

if TYPE_CHECKING:
    from mercury.config import Settings

USER_COLUMNS = ("user_id", "user_token", "entity_id")


def erase_warehouse(settings: Settings, subjects: list[Subject]) -> list[Removal]:
    import duckdb

    path = settings.warehouse.duckdb_path
    if path is None or not path.exists():
        return []
    removals = []
    with duckdb.connect(str(path)) as con:
        columns = con.execute(
            "select c.table_schema, c.table_name, c.column_name "
            "from information_schema.columns c join information_schema.tables t "
            "  on t.table_schema = c.table_schema and t.table_name = c.table_name "
            "where t.table_type = 'BASE TABLE' and c.column_name in ?",
            [list(USER_COLUMNS)]).fetchall()
        by_table: dict[tuple[str, str], list[str]] = {}
        for schema, table, column in columns:
            by_table.setdefault((schema, table), []).append(column)
        for (schema, table), cols in sorted(by_table.items()):
            where = " or ".join(f'"{c}" in (select unnest(?))' for c in cols)
            for who in subjects:
                count = con.execute(f'delete from "{schema}"."{table}" where {where}',
                                    [list(who.ids)] * len(cols)).fetchone()
                removed = int(count[0]) if count else 0
                removals.append(Removal(who.ticket, "warehouse", f"{schema}.{table}", removed))
        con.execute("checkpoint")  # deleted rows leave the file, not only the WAL's view
    return removals

{#-
  GDPR erasure in the warehouse (mercury.gdpr.warehouse runs it: `dbt run-operation
  erase_subjects` with MERCURY_ERASE_SUBJECTS='{"<ticket>": ["<user id>", "<token>", ...]}'
  in the environment, so the ids stay out of dbt's run results).

  Every base table of the target database with a user column (user_id, user_token,
  entity_id) loses the rows of each ticket's ids; views are left alone (they show what the
  tables hold). One log line per ticket and table, `mercury-erased <json>`, carries the count
  for the evidence. The same statements run on DuckDB (local) and Snowflake (production, where
  Time Travel and Fail-safe then keep the deleted rows for their retention: docs/COMPLIANCE.md).
-#}
{% macro erase_subjects() %}
  {% set subjects = fromjson(env_var('MERCURY_ERASE_SUBJECTS')) %}
  {% set found = run_query(
      "select c.table_schema, c.table_name, lower(c.column_name) "
      ~ "from information_schema.columns c join information_schema.tables t "
      ~ "on t.table_schema = c.table_schema and t.table_name = c.table_name "
      ~ "where t.table_type = 'BASE TABLE' "
      ~ "and lower(c.column_name) in ('user_id', 'user_token', 'entity_id') "
      ~ "order by 1, 2, 3") %}
  {% set tables = {} %}
  {% for row in found.rows %}
    {% set name = adapter.quote(row[0]) ~ "." ~ adapter.quote(row[1]) %}
    {% do tables.setdefault(name, []).append(row[2]) %}
  {% endfor %}
  {% for ticket, ids in subjects.items() %}
    {% set values = [] %}
    {% for value in ids %}{% do values.append("'" ~ value | replace("'", "''") ~ "'") %}{% endfor %}
    {% for name, columns in tables.items() %}
      {% set terms = [] %}
      {% for column in columns %}{% do terms.append(column ~ " in (" ~ values | join(", ") ~ ")") %}{% endfor %}
      {% set result = run_query("delete from " ~ name ~ " where " ~ terms | join(" or ")) %}
      {% set removed = result.rows[0][0] if result.rows else 0 %}
      {% do log("mercury-erased " ~ tojson({"ticket": ticket, "table": name | replace('"', ''),
                                             "removed": removed | int}), info=True) %}
    {% endfor %}
  {% endfor %}
{% endmacro %}

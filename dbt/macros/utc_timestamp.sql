{#-
  A timestamp-with-time-zone column as a plain timestamp in UTC, whatever the session time zone.

  The lake stores event times as Iceberg `timestamptz` (UTC instants). Casting such a value to a
  timestamp without zone uses the session time zone on both DuckDB and Snowflake, so a plain cast
  would shift the wall clock on any machine not set to UTC; convert explicitly instead.
-#}
{% macro utc_timestamp(column) -%}
  {{ return(adapter.dispatch('utc_timestamp', 'mercury')(column)) }}
{%- endmacro %}

{% macro default__utc_timestamp(column) -%}
  cast(convert_timezone('UTC', {{ column }}) as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro snowflake__utc_timestamp(column) -%}
  convert_timezone('UTC', {{ column }})::timestamp_ntz
{%- endmacro %}

{% macro duckdb__utc_timestamp(column) -%}
  timezone('UTC', {{ column }})
{%- endmacro %}

{#-
  Reading the feature history's JSON text columns (mercury.features.offline.history: one JSON object
  per feature, e.g. settled_amount = {"7d": {"USD": 12.5}, "30d": {...}}) on both engines.
  DuckDB parses the text with its json extension; Snowflake with parse_json. Keys are quoted in
  paths because window labels start with a digit ("7d").
-#}

{#- The value at `keys` (a list of object keys) as a number (double); null when absent. -#}
{% macro json_number(column, keys) -%}
  {{ return(adapter.dispatch('json_number', 'mercury')(column, keys)) }}
{%- endmacro %}

{% macro duckdb__json_number(column, keys) -%}
  cast(json_extract({{ column }}, '${% for k in keys %}."{{ k }}"{% endfor %}') as double)
{%- endmacro %}

{% macro snowflake__json_number(column, keys) -%}
  parse_json({{ column }}){% for k in keys %}:"{{ k }}"{% endfor %}::double
{%- endmacro %}

{#- The value at `keys` as an integer (counts); null when absent. -#}
{% macro json_integer(column, keys) -%}
  {{ return(adapter.dispatch('json_integer', 'mercury')(column, keys)) }}
{%- endmacro %}

{% macro duckdb__json_integer(column, keys) -%}
  cast(json_extract({{ column }}, '${% for k in keys %}."{{ k }}"{% endfor %}') as bigint)
{%- endmacro %}

{% macro snowflake__json_integer(column, keys) -%}
  parse_json({{ column }}){% for k in keys %}:"{{ k }}"{% endfor %}::bigint
{%- endmacro %}

{#- Join clause: one row per entry of the JSON object at `keys` (none when it is empty or
    absent), exposing json_entry_key(alias) and json_entry_number(alias). -#}
{% macro json_object_rows(column, keys, alias) -%}
  {{ return(adapter.dispatch('json_object_rows', 'mercury')(column, keys, alias)) }}
{%- endmacro %}

{% macro duckdb__json_object_rows(column, keys, alias) -%}
  cross join json_each(json_extract({{ column }}, '${% for k in keys %}."{{ k }}"{% endfor %}')) as {{ alias }}
{%- endmacro %}

{% macro snowflake__json_object_rows(column, keys, alias) -%}
  cross join lateral flatten(input => parse_json({{ column }}){% for k in keys %}:"{{ k }}"{% endfor %}) as {{ alias }}
{%- endmacro %}

{% macro json_entry_key(alias) -%}
  cast({{ alias }}.key as {{ dbt.type_string() }})
{%- endmacro %}

{% macro json_entry_number(alias) -%}
  {{ return(adapter.dispatch('json_entry_number', 'mercury')(alias)) }}
{%- endmacro %}

{% macro duckdb__json_entry_number(alias) -%}
  cast({{ alias }}.value as double)
{%- endmacro %}

{% macro snowflake__json_entry_number(alias) -%}
  {{ alias }}.value::double
{%- endmacro %}

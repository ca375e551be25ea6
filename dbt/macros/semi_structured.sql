{#-
  Arrays and maps of the audit contracts, on both engines. Locally (DuckDB) they are LIST and
  MAP columns, read from Iceberg by pyiceberg; on Snowflake they are ARRAY and MAP/OBJECT
  columns of the Iceberg table. Indexes in SQL written by these macros are 1-based.
-#}

{#- Join clause: one row per element of `array_column` (none for an empty or null array),
    exposing `<alias>.ordinal` (1-based) and `<alias>.element`. Use array_ordinal(alias) and
    array_element(alias) rather than those names. -#}
{% macro array_rows(array_column, alias) -%}
  {{ return(adapter.dispatch('array_rows', 'mercury')(array_column, alias)) }}
{%- endmacro %}

{% macro duckdb__array_rows(array_column, alias) -%}
  cross join unnest({{ array_column }}) with ordinality as {{ alias }}(element, ordinal)
{%- endmacro %}

{% macro snowflake__array_rows(array_column, alias) -%}
  cross join lateral flatten(input => {{ array_column }}) as {{ alias }}
{%- endmacro %}

{% macro array_ordinal(alias) -%}
  {{ return(adapter.dispatch('array_ordinal', 'mercury')(alias)) }}
{%- endmacro %}

{% macro duckdb__array_ordinal(alias) -%}
  cast({{ alias }}.ordinal as integer)
{%- endmacro %}

{% macro snowflake__array_ordinal(alias) -%}
  cast({{ alias }}.index + 1 as integer)
{%- endmacro %}

{% macro array_element(alias) -%}
  {{ return(adapter.dispatch('array_element', 'mercury')(alias)) }}
{%- endmacro %}

{% macro duckdb__array_element(alias) -%}
  {{ alias }}.element
{%- endmacro %}

{% macro snowflake__array_element(alias) -%}
  {{ alias }}.value
{%- endmacro %}

{#- The element at a 1-based position of another array (null past its end or when null). -#}
{% macro array_at(array_column, position) -%}
  {{ return(adapter.dispatch('array_at', 'mercury')(array_column, position)) }}
{%- endmacro %}

{% macro duckdb__array_at(array_column, position) -%}
  {{ array_column }}[{{ position }}]
{%- endmacro %}

{% macro snowflake__array_at(array_column, position) -%}
  get({{ array_column }}, {{ position }} - 1)
{%- endmacro %}

{#- Number of elements; null for a null array. -#}
{% macro array_length(array_column) -%}
  {{ return(adapter.dispatch('array_length', 'mercury')(array_column)) }}
{%- endmacro %}

{% macro duckdb__array_length(array_column) -%}
  len({{ array_column }})
{%- endmacro %}

{% macro snowflake__array_length(array_column) -%}
  array_size({{ array_column }})
{%- endmacro %}

{#- An array or map as compact JSON text, for people reading a row; null stays null. -#}
{% macro json_text(column) -%}
  {{ return(adapter.dispatch('json_text', 'mercury')(column)) }}
{%- endmacro %}

{% macro duckdb__json_text(column) -%}
  cast(to_json({{ column }}) as varchar)
{%- endmacro %}

{% macro snowflake__json_text(column) -%}
  to_json({{ column }})
{%- endmacro %}

{#- A part of a chunk id `<doc_id>:<position>:<content hash>`, read from the right so that a
    doc id containing ':' stays whole: 1 = doc_id, 2 = position, 3 = hash; null when the id
    does not have that shape. -#}
{% macro chunk_id_part(column, part) -%}
  {{ return(adapter.dispatch('chunk_id_part', 'mercury')(column, part)) }}
{%- endmacro %}

{% macro duckdb__chunk_id_part(column, part) -%}
  nullif(regexp_extract({{ column }}, '^(.+):([0-9]+):([^:]+)$', {{ part }}), '')
{%- endmacro %}

{% macro snowflake__chunk_id_part(column, part) -%}
  regexp_substr({{ column }}, '^(.+):([0-9]+):([^:]+)$', 1, 1, 'e', {{ part }})
{%- endmacro %}

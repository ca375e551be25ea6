{#-
  A personal column (data_class `personal` in the contract) as the querying session may see it:
  the value for the compliance investigator role, '***masked***' for everyone else, null stays
  null (whether a value exists is not itself personal).

  The check runs when the view is queried, not when dbt builds it, so it belongs in views only.
  A table built from a masked column would store '***masked***' (dbt's own session is no
  investigator): no table model selects these columns (see docs/COMPLIANCE.md).

  - Snowflake: the session's primary role must be the investigator role (`use role
    COMPLIANCE_INVESTIGATOR`), a deliberate switch that query history records. The role name
    comes from the var `compliance_role`. In production the lake table also carries a masking
    policy on the same columns, so the raw table is no way around this.
  - DuckDB (local): there are no roles; the session variable `mercury_role` stands in:
    `SET VARIABLE mercury_role = 'compliance_investigator'`. This shows the behaviour, it
    protects nothing: whoever can open the file can read the raw copy of the lake table.
-#}
{% macro mask_personal(column) -%}
  {{ return(adapter.dispatch('mask_personal', 'mercury')(column)) }}
{%- endmacro %}

{% macro default__mask_personal(column) -%}
  case
    when {{ column }} is null then null
    when current_role() = '{{ var("compliance_role") | upper }}' then {{ column }}
    else '{{ var("masked_value") }}'
  end
{%- endmacro %}

{% macro duckdb__mask_personal(column) -%}
  case
    when {{ column }} is null then null
    when getvariable('mercury_role') = '{{ var("compliance_role") | lower }}' then {{ column }}
    else '{{ var("masked_value") }}'
  end
{%- endmacro %}

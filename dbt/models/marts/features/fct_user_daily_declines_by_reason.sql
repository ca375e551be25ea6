-- One row per user, day and decline reason: declined authorisations in the 24 h and 7 days
-- ending with the day (UTC), from the declines history. A reason appears on a day when the
-- user had a decline for it within 7 days; a reason the history keys "unknown" had none.

{%- set windows = [('declined_count_1d', '1d'), ('declined_count_7d', '7d')] %}

with declines as (

    select * from {{ ref('stg_features__declines_history') }}

),

entries as (

    {% for metric, label in windows %}
    select
        d.user_id,
        d.as_of_date,
        {{ json_entry_key('e') }} as decline_reason,
        '{{ metric }}' as metric,
        cast({{ json_entry_number('e') }} as bigint) as declines
    from declines as d
    {{ json_object_rows('d.declined_by_reason', [label], 'e') }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

final as (

    select
        user_id || '|' || cast(as_of_date as {{ dbt.type_string() }}) || '|' || decline_reason
            as user_day_reason_id,
        user_id,
        as_of_date,
        decline_reason,
        {% for metric, label in windows %}
        coalesce(max(case when metric = '{{ metric }}' then declines end), 0)
            as {{ metric }}{{ ',' if not loop.last }}
        {% endfor %}
    from entries
    group by user_id, as_of_date, decline_reason

)

select * from final

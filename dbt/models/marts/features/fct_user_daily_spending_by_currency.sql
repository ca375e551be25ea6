-- One row per user, day and currency: the money features of the spending history at the end
-- of that day (UTC), flattened out of their per-currency JSON objects. Amounts are in major
-- units of `currency` and never summed across currencies. A currency appears on a day when
-- any of these features has a value in it; a sum it has no entry for is 0, a min, max or
-- average null.

{%- set amounts = [
    ('settled_amount_1h', 'settled_amount', '1h'),
    ('settled_amount_1d', 'settled_amount', '1d'),
    ('settled_amount_7d', 'settled_amount', '7d'),
    ('settled_amount_30d', 'settled_amount', '30d'),
    ('authorised_amount_1h', 'authorised_amount', '1h'),
    ('authorised_amount_1d', 'authorised_amount', '1d'),
    ('authorised_amount_7d', 'authorised_amount', '7d'),
    ('reversed_amount_30d', 'reversed_amount', '30d'),
] %}
{%- set statistics = [
    ('largest_purchase_30d', 'largest_purchase', '30d'),
    ('smallest_purchase_30d', 'smallest_purchase', '30d'),
    ('average_purchase_30d', 'average_purchase', '30d'),
] %}

with spending as (

    select * from {{ ref('stg_features__spending_history') }}

),

entries as (

    {% for metric, column, label in amounts + statistics %}
    select
        s.user_id,
        s.as_of_date,
        {{ json_entry_key('e') }} as currency,
        '{{ metric }}' as metric,
        {{ json_entry_number('e') }} as amount
    from spending as s
    {{ json_object_rows('s.' ~ column, [label], 'e') }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

final as (

    select
        user_id || '|' || cast(as_of_date as {{ dbt.type_string() }}) || '|' || currency
            as user_day_currency_id,
        user_id,
        as_of_date,
        currency,
        {% for metric, column, label in amounts %}
        coalesce(max(case when metric = '{{ metric }}' then amount end), 0) as {{ metric }},
        {% endfor %}
        {% for metric, column, label in statistics %}
        max(case when metric = '{{ metric }}' then amount end) as {{ metric }}{{ ',' if not loop.last }}
        {% endfor %}
    from entries
    group by user_id, as_of_date, currency

)

select * from final

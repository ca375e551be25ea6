-- One row per user and day: how the user stood at the end of that day (UTC) in the feature
-- history, counts only (amounts are per currency: fct_user_daily_spending_by_currency).
-- A user missing from one of the two histories that day had no counting event for it, so its
-- counts are 0.

with spending as (

    select * from {{ ref('stg_features__spending_history') }}

),

declines as (

    select * from {{ ref('stg_features__declines_history') }}

),

settled_currencies as (

    select
        s.user_id,
        s.as_of_date,
        count(*) as settled_currencies_30d
    from spending as s
    {{ json_object_rows('s.settled_amount', ['30d'], 'currency_entry') }}
    group by s.user_id, s.as_of_date

),

joined as (

    select
        coalesce(s.user_id, d.user_id) as user_id,
        coalesce(s.as_of_date, d.as_of_date) as as_of_date,

        {{ json_integer('s.settled_count', ['1d']) }} as settled_count_1d,
        {{ json_integer('s.settled_count', ['7d']) }} as settled_count_7d,
        {{ json_integer('s.settled_count', ['30d']) }} as settled_count_30d,
        {{ json_integer('s.merchants', ['7d']) }} as merchants_7d,
        {{ json_integer('s.merchants', ['30d']) }} as merchants_30d,

        {{ json_integer('d.declined_count', ['1h']) }} as declined_count_1h,
        {{ json_integer('d.declined_count', ['1d']) }} as declined_count_1d,
        {{ json_integer('d.declined_count', ['7d']) }} as declined_count_7d,
        {{ json_integer('d.approved_count', ['1d']) }} as approved_count_1d,

        s.feature_set_version as spending_version,
        d.feature_set_version as declines_version

    from spending as s
    full outer join declines as d
        on s.user_id = d.user_id and s.as_of_date = d.as_of_date

),

final as (

    select
        j.user_id || '|' || cast(j.as_of_date as {{ dbt.type_string() }}) as user_day_id,
        j.user_id,
        j.as_of_date,

        coalesce(j.settled_count_1d, 0) as settled_count_1d,
        coalesce(j.settled_count_7d, 0) as settled_count_7d,
        coalesce(j.settled_count_30d, 0) as settled_count_30d,
        coalesce(j.merchants_7d, 0) as merchants_7d,
        coalesce(j.merchants_30d, 0) as merchants_30d,
        coalesce(c.settled_currencies_30d, 0) as settled_currencies_30d,

        coalesce(j.declined_count_1h, 0) as declined_count_1h,
        coalesce(j.declined_count_1d, 0) as declined_count_1d,
        coalesce(j.declined_count_7d, 0) as declined_count_7d,
        coalesce(j.approved_count_1d, 0) as approved_count_1d,
        -- Of the authorisations decided in the last 24 h, the share declined (null if none).
        cast(coalesce(j.declined_count_1d, 0) as double)
            / nullif(coalesce(j.declined_count_1d, 0) + coalesce(j.approved_count_1d, 0), 0)
            as decline_rate_1d,

        j.spending_version,
        j.declines_version

    from joined as j
    left join settled_currencies as c
        on j.user_id = c.user_id and j.as_of_date = c.as_of_date

)

select * from final

-- One row per user and day from the spending history table of the version chosen by the var
-- feature_history_versions (a new version is read once it is promoted and the var follows).
-- Rename and cast only: the feature values stay JSON text; the marts read them.

with source as (

    select * from {{ source('features', 'spending_v' ~ var('feature_history_versions')['spending']) }}

),

renamed as (

    select
        entity_id as user_id,
        cast(as_of_date as date) as as_of_date,
        cast(as_of_ms as bigint) as as_of_ms,
        {{ var('feature_history_versions')['spending'] }} as feature_set_version,

        settled_amount,
        settled_count,
        authorised_amount,
        settled_by_category,
        largest_purchase,
        average_purchase,
        smallest_purchase,
        merchants,
        reversed_amount,

        {{ utc_timestamp('computed_at') }} as computed_at

    from source

)

select * from renamed

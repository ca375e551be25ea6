-- One row per user and day from the declines history table of the version chosen by the var
-- feature_history_versions. Rename and cast only: the feature values stay JSON text.

with source as (

    select * from {{ source('features', 'declines_v' ~ var('feature_history_versions')['declines']) }}

),

renamed as (

    select
        entity_id as user_id,
        cast(as_of_date as date) as as_of_date,
        cast(as_of_ms as bigint) as as_of_ms,
        {{ var('feature_history_versions')['declines'] }} as feature_set_version,

        declined_count,
        declined_by_reason,
        approved_count,

        {{ utc_timestamp('computed_at') }} as computed_at

    from source

)

select * from renamed

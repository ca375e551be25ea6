-- One safety outcome per request from the audit lake table; rename and cast only. A retried
-- report is the same report: only the earliest copy (by event_ts) is kept.

with source as (

    select * from {{ source('audit', 'safety_outcomes') }}

),

first_copy as (

    select *
    from source
    qualify row_number() over (
        partition by request_id
        order by event_ts, caller
    ) = 1

),

renamed as (

    select
        request_id,
        {{ utc_timestamp('event_ts') }} as decided_at,
        caller as reported_by,
        upper(outcome) as outcome,
        categories,
        llm_model_version,
        safety_model_version,
        answer_sha256,
        cast(answer_latency_ms as double) as answer_latency_ms

    from first_copy

)

select * from renamed

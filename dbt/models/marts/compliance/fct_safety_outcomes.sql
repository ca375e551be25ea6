-- Grain: one row per request whose answer received a safety outcome. The outcome can arrive
-- before the request's audit record (two streams, shipped independently): then the request
-- fields are null and has_audit_record is false until the audit record lands.

with outcomes as (

    select * from {{ ref('stg_audit__safety_outcomes') }}

),

requests as (

    select
        request_id,
        event_ts,
        event_date,
        user_token,
        intent,
        llm_model_version,
        is_degraded
    from {{ ref('fct_inference_requests') }}

),

final as (

    select
        outcomes.request_id,
        outcomes.outcome,
        outcomes.categories,
        coalesce({{ array_length('outcomes.categories') }}, 0) as category_count,
        outcomes.decided_at,
        outcomes.reported_by,
        outcomes.safety_model_version,
        outcomes.llm_model_version,
        outcomes.answer_sha256,
        outcomes.answer_latency_ms,

        requests.request_id is not null as has_audit_record,
        requests.event_ts as requested_at,
        requests.event_date as request_date,
        requests.user_token,
        requests.intent,
        requests.is_degraded,
        requests.llm_model_version as context_llm_model_version,
        outcomes.llm_model_version is not null
            and requests.llm_model_version is not null
            and outcomes.llm_model_version <> requests.llm_model_version
            as is_llm_version_mismatch

    from outcomes
    left join requests on requests.request_id = outcomes.request_id

)

select * from final

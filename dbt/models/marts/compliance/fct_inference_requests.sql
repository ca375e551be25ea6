-- Grain: one row per assistant request (request_id). What was fetched, from which versions,
-- how fast, and what was degraded. No personal column: this is a table, and masking is decided
-- per query in views (compliance_assistant_context shows them to the investigator role);
-- only whether they were present is kept here.

with requests as (

    select * from {{ ref('stg_audit__inference_requests') }}

),

final as (

    select
        request_id,
        event_ts,
        cast(event_ts as date) as event_date,
        caller,
        user_token,
        intent,

        question_redacted is not null as has_question_redacted,
        served_features_json is not null as has_served_features,

        fetched_parts,
        coalesce({{ array_length('retrieved_chunk_ids') }}, 0) as retrieved_chunk_count,
        retrieved_chunk_ids,
        retrieved_chunk_scores,

        feature_versions,
        feature_newest_event_ms,
        features_as_of,
        v1_feature_set,
        v1_feature_set_version,

        index_version,
        embedding_model,
        llm_model_version,

        degraded_parts,
        coalesce({{ array_length('degraded_parts') }}, 0) > 0 as is_degraded,

        stage_latency_ms,
        total_latency_ms,
        assertion_id,
        served_from

    from requests

)

select * from final

-- One row per request from the audit lake table; rename and cast only, plus two guards:
-- a copy shipped again (at-least-once delivery) is dropped, the earliest event_ts winning,
-- and personal columns are masked per query (mask_personal), so nothing downstream can show
-- them to a session that is not the compliance investigator's.

with source as (

    select * from {{ source('audit', 'inference_requests') }}

),

first_copy as (

    select *
    from source
    qualify row_number() over (
        partition by request_id
        order by event_ts, total_latency_ms, served_from
    ) = 1

),

renamed as (

    select
        request_id,
        {{ utc_timestamp('event_ts') }} as event_ts,
        caller,
        user_token,
        intent,

        {{ mask_personal('question') }} as question_ciphertext,
        {{ mask_personal('question_redacted') }} as question_redacted,
        {{ mask_personal('served_features_json') }} as served_features_json,

        retrieved_chunk_ids,
        retrieved_chunk_scores,
        fetched_parts,
        degraded_parts,

        feature_versions,
        feature_newest_event_ms,
        {{ utc_timestamp('features_as_of') }} as features_as_of,
        feature_set as v1_feature_set,
        feature_set_version as v1_feature_set_version,

        index_version,
        embedding_model,
        llm_model_version,

        stage_latency_ms,
        cast(total_latency_ms as double) as total_latency_ms,
        assertion_id,
        served_from

    from first_copy

)

select * from renamed

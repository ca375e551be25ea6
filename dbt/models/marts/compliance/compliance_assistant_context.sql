-- Grain: one row per assistant request. Answers "what did the assistant see when it told
-- user X Y on date Z": filter on user_token (from `mercury privacy token <user_id>`) and
-- event_date, read the row. A view on purpose: the personal columns come masked from
-- staging, and whether a session sees them is decided when it queries (mask_personal).

with requests as (

    select * from {{ ref('fct_inference_requests') }}

),

personal as (

    select
        request_id,
        question_redacted,
        question_ciphertext,
        served_features_json
    from {{ ref('stg_audit__inference_requests') }}

),

documents as (

    select
        request_id,
        {{ dbt.listagg('doc_id', "', '", 'order by chunk_rank') }} as retrieved_doc_ids
    from {{ ref('fct_inference_retrieved_chunks') }}
    group by request_id

),

outcomes as (

    select * from {{ ref('fct_safety_outcomes') }}

),

final as (

    select
        requests.request_id,
        requests.user_token,
        requests.event_ts,
        requests.event_date,
        requests.caller,
        requests.intent,
        personal.question_redacted,
        personal.question_ciphertext,

        requests.retrieved_chunk_count,
        documents.retrieved_doc_ids,
        {{ json_text('requests.retrieved_chunk_ids') }} as retrieved_chunk_ids,
        {{ json_text('requests.retrieved_chunk_scores') }} as retrieved_chunk_scores,

        {{ json_text('requests.fetched_parts') }} as fetched_parts,
        {{ json_text('requests.feature_versions') }} as feature_versions,
        requests.features_as_of,
        {{ json_text('requests.feature_newest_event_ms') }} as feature_newest_event_ms,
        requests.v1_feature_set,
        requests.v1_feature_set_version,
        personal.served_features_json,

        requests.llm_model_version,
        requests.embedding_model,
        requests.index_version,

        requests.is_degraded,
        {{ json_text('requests.degraded_parts') }} as degraded_parts,
        requests.total_latency_ms,

        coalesce(outcomes.outcome, 'NOT_REPORTED') as safety_outcome,
        {{ json_text('outcomes.categories') }} as safety_categories,
        outcomes.safety_model_version,
        outcomes.decided_at as safety_decided_at,
        outcomes.answer_sha256,

        requests.assertion_id,
        requests.served_from

    from requests
    left join personal on personal.request_id = requests.request_id
    left join documents on documents.request_id = requests.request_id
    left join outcomes on outcomes.request_id = requests.request_id

)

select * from final

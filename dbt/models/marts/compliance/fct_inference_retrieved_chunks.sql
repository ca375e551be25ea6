-- Grain: one row per request x retrieved chunk, in retrieval order (chunk_rank 1 = best).
-- A request that retrieved nothing has no row. The chunk id `<doc_id>:<position>:<hash>` is
-- read from the right, so a doc id that contains ':' stays whole.

with requests as (

    select
        request_id,
        event_ts,
        event_date,
        user_token,
        index_version,
        embedding_model,
        retrieved_chunk_ids,
        retrieved_chunk_scores
    from {{ ref('fct_inference_requests') }}

),

chunks as (

    select
        requests.request_id,
        {{ array_ordinal('chunk') }} as chunk_rank,
        cast({{ array_element('chunk') }} as {{ dbt.type_string() }}) as chunk_id,
        cast({{ array_at('requests.retrieved_chunk_scores', array_ordinal('chunk')) }}
             as double) as retrieval_score,
        requests.event_ts,
        requests.event_date,
        requests.user_token,
        requests.index_version,
        requests.embedding_model
    from requests
    {{ array_rows('requests.retrieved_chunk_ids', 'chunk') }}

),

final as (

    select
        request_id || '#' || cast(chunk_rank as {{ dbt.type_string() }}) as request_chunk_key,
        request_id,
        chunk_rank,
        chunk_id,
        {{ chunk_id_part('chunk_id', 1) }} as doc_id,
        cast({{ chunk_id_part('chunk_id', 2) }} as integer) as chunk_position,
        {{ chunk_id_part('chunk_id', 3) }} as chunk_hash,
        retrieval_score,
        event_ts,
        event_date,
        user_token,
        index_version,
        embedding_model
    from chunks

)

select * from final

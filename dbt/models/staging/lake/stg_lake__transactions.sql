-- One row per transaction event, from the lake table; rename and cast only.
-- card_last4 (card data) stops here: only whether it was present goes on.

with source as (

    select * from {{ source('lake', 'transactions') }}

),

renamed as (

    select
        event_id,
        user_id,
        account_id,
        merchant_id,
        purchase_id,
        installment_plan_id,

        upper(event_type) as event_type,
        upper(auth_decision) as auth_decision,
        upper(decline_reason) as decline_reason,
        upper(reversal_reason) as reversal_reason,

        cast(amount as decimal(18, 2)) as amount,
        upper(currency) as currency,
        cast(risk_score as {{ dbt.type_float() }}) as risk_score,
        mcc_code,
        upper(country) as country,
        card_last4 is not null as has_card_last4,

        {{ utc_timestamp('event_ts') }} as event_ts,
        {{ utc_timestamp('ingest_ts') }} as ingest_ts

    from source

)

select * from renamed

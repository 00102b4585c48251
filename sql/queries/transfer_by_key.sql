-- $1 idempotency key (the caller's, or an internal '~' key). Served by the unique index
-- transfers_idempotency_key. Head of a transfer-record read (tail: transfer_records.sql).
WITH page AS MATERIALIZED (
    SELECT t.id, t.created_at AS sort_time, t.id AS sort_id
      FROM wallet_ledger.transfers t
     WHERE t.idempotency_key = $1
)

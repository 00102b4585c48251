-- $1 transfer id. Head of a transfer-record read (tail: transfer_records.sql).
WITH page AS MATERIALIZED (
    SELECT t.id, t.created_at AS sort_time, t.id AS sort_id
      FROM wallet_ledger.transfers t
     WHERE t.id = $1
)

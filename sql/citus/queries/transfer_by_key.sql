-- Transfer record by a caller's idempotency key, Citus form. $1 key. On Citus a caller key is
-- unique across the cluster only in transfer_keys (distributed by key: one shard), which names
-- its transfer; transfers themselves are unique per (from_account, key). Head of a
-- transfer-record read (tail: sql/queries/transfer_records.sql).
WITH page AS MATERIALIZED (
    SELECT k.transfer_id AS id, 'epoch'::timestamptz AS sort_time, k.transfer_id AS sort_id
      FROM wallet_ledger.transfer_keys k
     WHERE k.key = $1 AND k.transfer_id IS NOT NULL
)

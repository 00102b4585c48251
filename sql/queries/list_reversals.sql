-- The parameters of list_transfers.sql ($1, $2 lower bound, $3 created before, $4 page size + 1,
-- $5 reversals, $6 metadata contained). Only reversals, in (created_at, id) order: served by the
-- partial index transfers_reversal_listing (created_at, id) WHERE reverses IS NOT NULL, which
-- holds reversals only; the bounds are its index conditions. Head of a transfer-record read
-- (tail: transfer_records.sql). Reads only: takes no row lock.
WITH page AS MATERIALIZED (
    SELECT t.id, t.created_at AS sort_time, t.id AS sort_id
      FROM wallet_ledger.transfers t
     WHERE t.reverses IS NOT NULL
       AND (t.created_at, t.id) > (COALESCE($1::timestamptz, '-infinity'), COALESCE($2::bigint, 0))
       AND t.created_at < COALESCE($3::timestamptz, 'infinity')
       AND ($5::boolean IS NULL OR $5)
       AND ($6::jsonb IS NULL OR (t.metadata IS NOT NULL AND t.metadata @> $6))
     ORDER BY t.created_at, t.id
     LIMIT $4
)

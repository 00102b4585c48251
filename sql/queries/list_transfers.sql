-- $1, $2 the page's lower bound (created_at timestamptz, transfer id bigint), exclusive: the
-- cursor or "created after" (as (time, i64::MAX)), whichever is later, both NULL for none;
-- $3 created before timestamptz (NULL = no bound), $4 page size + 1, $5 reversals boolean
-- (true: only reversals, false: no reversals, NULL: both), $6 metadata contained jsonb (NULL =
-- no filter; a page filtered by metadata is list_transfers_by_metadata.sql, by reversals
-- list_reversals.sql: here both are residuals). All transfers in (created_at, id) order: served
-- by transfers_listing, the lower bound (one row comparison, where the scan starts) and the
-- upper bound as its index conditions; "no reversals" filters the rare reversals out on the
-- way. Head of a transfer-record read (tail: transfer_records.sql). Reads only: takes no row
-- lock.
WITH page AS MATERIALIZED (
    SELECT t.id, t.created_at AS sort_time, t.id AS sort_id
      FROM wallet_ledger.transfers t
     WHERE (t.created_at, t.id) > (COALESCE($1::timestamptz, '-infinity'), COALESCE($2::bigint, 0))
       AND t.created_at < COALESCE($3::timestamptz, 'infinity')
       AND ($5::boolean IS NULL OR (t.reverses IS NOT NULL) = $5)
       AND ($6::jsonb IS NULL OR (t.metadata IS NOT NULL AND t.metadata @> $6))
     ORDER BY t.created_at, t.id
     LIMIT $4
)

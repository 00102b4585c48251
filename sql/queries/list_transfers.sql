-- $1, $2 the page's lower bound (created_at timestamptz, transfer id bigint), exclusive: the
-- cursor or "created after" (as (time, i64::MAX)), whichever is later, both NULL for none;
-- $3 created before timestamptz (NULL = no bound), $4 page size + 1. All transfers in
-- (created_at, id) order: served by transfers_listing, the lower bound (one row comparison,
-- where the scan starts) and the upper bound as its index conditions. Head of a transfer-record read (tail:
-- transfer_records.sql). Reads only: takes no row lock.
WITH page AS MATERIALIZED (
    SELECT t.id, t.created_at AS sort_time, t.id AS sort_id
      FROM wallet_ledger.transfers t
     WHERE (t.created_at, t.id) > (COALESCE($1::timestamptz, '-infinity'), COALESCE($2::bigint, 0))
       AND t.created_at < COALESCE($3::timestamptz, 'infinity')
     ORDER BY t.created_at, t.id
     LIMIT $4
)

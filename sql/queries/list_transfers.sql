-- $1 cursor created_at timestamptz, $2 cursor transfer id bigint (both NULL on the first
-- page), $3 created after timestamptz, $4 created before timestamptz (NULL = no bound),
-- $5 page size + 1. All transfers in (created_at, id) order: served by transfers_listing, with
-- the cursor and both bounds as its index conditions. Head of a transfer-record read (tail:
-- transfer_records.sql). Reads only: takes no row lock.
WITH page AS MATERIALIZED (
    SELECT t.id, t.created_at AS sort_time, t.id AS sort_id
      FROM wallet_ledger.transfers t
     WHERE (t.created_at, t.id) > (COALESCE($1::timestamptz, '-infinity'), COALESCE($2::bigint, 0))
       AND t.created_at > COALESCE($3::timestamptz, '-infinity')
       AND t.created_at < COALESCE($4::timestamptz, 'infinity')
     ORDER BY t.created_at, t.id
     LIMIT $5
)

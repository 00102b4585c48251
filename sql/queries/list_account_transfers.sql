-- $1 account id; $2, $3 the page's lower bound (entry created_at timestamptz, entry id bigint),
-- exclusive: the cursor or "created after" (as (time, i64::MAX)), whichever is later, both
-- NULL for none; $4 created before timestamptz (NULL = no bound); both bounds compare the
-- account's entries' times; $5 page size + 1. One account's transfers in the order of its
-- entries (its chain): served by entries_account_time (account_id, created_at, id), the lower
-- bound (where the scan starts) and the upper bound as its index conditions; one shard's
-- entries on Citus. Head of a transfer-record read (tail: transfer_records.sql).
WITH page AS MATERIALIZED (
    SELECT e.transfer_id AS id, e.created_at AS sort_time, e.id AS sort_id
      FROM wallet_ledger.entries e
     WHERE e.account_id = $1
       AND (e.created_at, e.id) > (COALESCE($2::timestamptz, '-infinity'), COALESCE($3::bigint, 0))
       AND e.created_at < COALESCE($4::timestamptz, 'infinity')
     ORDER BY e.created_at, e.id
     LIMIT $5
)

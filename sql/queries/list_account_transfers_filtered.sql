-- The parameters of list_account_transfers.sql ($1 account id, $2, $3 lower bound, $4 created
-- before, $5 page size + 1), and $6 reversals boolean (true: only reversals, false: no
-- reversals, NULL: both), $7 metadata contained jsonb (NULL = no filter). One account's
-- transfers with a filter on the transfers themselves: the account's entries in chain order
-- through entries_account_time as in list_account_transfers.sql, each joined to its transfer
-- by primary key and kept when it passes; the scan stops when the page is full. So a page costs
-- at most that account's entries from the page's start, never a scan of the entries or
-- transfers table. Not on Citus (entries and transfers are distributed on different columns
-- there: the library refuses these filters with an account in Citus mode). Head of a
-- transfer-record read (tail: transfer_records.sql). Reads only: takes no row lock.
WITH page AS MATERIALIZED (
    SELECT e.transfer_id AS id, e.created_at AS sort_time, e.id AS sort_id
      FROM wallet_ledger.entries e
      JOIN wallet_ledger.transfers t ON t.id = e.transfer_id
     WHERE e.account_id = $1
       AND (e.created_at, e.id) > (COALESCE($2::timestamptz, '-infinity'), COALESCE($3::bigint, 0))
       AND e.created_at < COALESCE($4::timestamptz, 'infinity')
       AND ($6::boolean IS NULL OR (t.reverses IS NOT NULL) = $6)
       AND ($7::jsonb IS NULL OR (t.metadata IS NOT NULL AND t.metadata @> $7))
     ORDER BY e.created_at, e.id
     LIMIT $5
)

-- The parameters of list_transfers.sql ($1, $2 lower bound, $3 created before, $4 page size + 1,
-- $5 reversals, $6 metadata contained jsonb, set). Transfers whose metadata contains an object:
-- the matching transfers are read through the partial GIN index transfers_metadata
-- (jsonb_path_ops, WHERE metadata IS NOT NULL: the query says so, or the planner could not use
-- it) alone, then bounded, sorted and cut to the page. A materialized CTE, so that the generic
-- plan cannot AND that bitmap with one of transfers_listing over the whole time range (as for
-- accounts). The cost of a page grows with the number of matching transfers: the filter is
-- meant to be selective (an order id, a customer). Head of a transfer-record read (tail:
-- transfer_records.sql). Reads only: takes no row lock.
WITH matching AS MATERIALIZED (
    SELECT t.id, t.created_at, t.reverses
      FROM wallet_ledger.transfers t
     WHERE t.metadata IS NOT NULL AND t.metadata @> $6::jsonb
), page AS MATERIALIZED (
    SELECT m.id, m.created_at AS sort_time, m.id AS sort_id
      FROM matching m
     WHERE (m.created_at, m.id) > (COALESCE($1::timestamptz, '-infinity'), COALESCE($2::bigint, 0))
       AND m.created_at < COALESCE($3::timestamptz, 'infinity')
       AND ($5::boolean IS NULL OR (m.reverses IS NOT NULL) = $5)
     ORDER BY m.created_at, m.id
     LIMIT $4
)

-- The tail of every transfer-record read: given the CTE `page(id, sort_time, sort_id)` of the
-- transfers to read (its head, in another file, names the parameters), one row per transfer
-- with its legs from its entries (ordered by account id), its legs' first currency and its
-- metadata ('{}' for none: the column is NULL then), in page order. Each step is a materialized CTE reached by id (transfers by primary key, entries by
-- entries_transfer, accounts by primary key), the form Citus can run as well: there transfers,
-- entries and accounts live on different shards, and the coordinator joins the three reads.
, t AS MATERIALIZED (
    SELECT t.id, t.idempotency_key, t.memo, t.metadata, t.created_at, t.reverses, t.reversed
      FROM wallet_ledger.transfers t
     WHERE t.id IN (SELECT id FROM page)
), e AS MATERIALIZED (
    SELECT e.transfer_id, e.account_id, e.amount
      FROM wallet_ledger.entries e
     WHERE e.transfer_id IN (SELECT id FROM page)
), a AS MATERIALIZED (
    SELECT a.id, a.currency
      FROM wallet_ledger.accounts a
     WHERE a.id = ANY (ARRAY(SELECT DISTINCT account_id FROM e))
)
SELECT t.id, t.idempotency_key, t.memo, COALESCE(t.metadata::jsonb, '{}'::jsonb) AS metadata, t.created_at,
       t.reverses, t.reversed, p.sort_time, p.sort_id,
       array_agg(e.account_id ORDER BY e.account_id) AS leg_accounts,
       array_agg(e.amount ORDER BY e.account_id) AS leg_amounts,
       (array_agg(a.currency ORDER BY e.account_id))[1] AS currency
  FROM page p
  JOIN t ON t.id = p.id
  JOIN e ON e.transfer_id = t.id
  JOIN a ON a.id = e.account_id
 GROUP BY t.id, t.idempotency_key, t.memo, t.metadata, t.created_at, t.reverses, t.reversed, p.sort_time, p.sort_id
 ORDER BY p.sort_time, p.sort_id

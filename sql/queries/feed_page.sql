-- $1 the cursor's position (exclusive, 0 = from the start), $2 the horizon (inclusive: every
-- position at or below it is final, from feed_advance), $3 page size. The changes between, in
-- position order: transfers (by primary key) and account or hold events (feed_events by
-- primary key) merged, then each one's details: a transfer's legs from its entries (ordered by
-- account id, with each account's balance and version after it), a capture's hold, an event's
-- account state after it and its metadata (the hold's, or the account's, fixed at opening).
-- Reads only: takes no row lock.
WITH pos AS MATERIALIZED (
    SELECT p.position, p.is_transfer
      FROM ((SELECT t.id AS position, true AS is_transfer
               FROM wallet_ledger.transfers t
              WHERE t.id > $1 AND t.id <= $2
              ORDER BY t.id LIMIT $3)
            UNION ALL
            (SELECT f.position, false
               FROM wallet_ledger.feed_events f
              WHERE f.position > $1 AND f.position <= $2
              ORDER BY f.position LIMIT $3)) p
     ORDER BY p.position
     LIMIT $3
), t AS MATERIALIZED (
    SELECT t.id, t.from_account, t.amount, t.idempotency_key, t.memo, t.metadata::jsonb AS metadata,
           t.reverses, h.id AS hold_id
      FROM wallet_ledger.transfers t
      LEFT JOIN wallet_ledger.holds h ON h.transfer_id = t.id
     WHERE t.id IN (SELECT position FROM pos WHERE is_transfer)
), e AS MATERIALIZED (
    SELECT e.transfer_id,
           array_agg(e.account_id ORDER BY e.account_id) AS accounts,
           array_agg(e.amount ORDER BY e.account_id) AS amounts,
           array_agg(e.balance_after ORDER BY e.account_id) AS balances,
           array_agg(e.account_version ORDER BY e.account_id) AS versions,
           (array_agg(a.currency ORDER BY e.account_id))[1] AS currency,
           min(e.created_at) AS at
      FROM wallet_ledger.entries e
      JOIN wallet_ledger.accounts a ON a.id = e.account_id
     WHERE e.transfer_id IN (SELECT position FROM pos WHERE is_transfer)
     GROUP BY e.transfer_id
), f AS MATERIALIZED (
    SELECT f.position, f.kind, f.account_id, f.hold_id, f.amount, f.balance, f.version, f.status,
           f.min_balance, f.max_balance, f.at, a.currency, h.memo,
           CASE WHEN f.hold_id IS NULL THEN a.metadata::jsonb ELSE h.metadata::jsonb END AS metadata,
           h.idempotency_key
      FROM wallet_ledger.feed_events f
      JOIN wallet_ledger.accounts a ON a.id = f.account_id
      LEFT JOIN wallet_ledger.holds h ON h.id = f.hold_id
     WHERE f.position IN (SELECT position FROM pos WHERE NOT is_transfer)
)
SELECT p.position,
       CASE WHEN NOT p.is_transfer THEN f.kind
            WHEN t.hold_id IS NOT NULL THEN 'hold_captured'
            WHEN t.reverses IS NOT NULL THEN 'reversal'
            WHEN t.from_account IS NULL THEN 'posting'
            ELSE 'transfer' END AS kind,
       t.id AS transfer_id,
       COALESCE(t.hold_id, f.hold_id) AS hold_id,
       t.reverses,
       CASE WHEN p.is_transfer THEN t.amount ELSE f.amount END AS amount,
       COALESCE(e.currency, f.currency) AS currency,
       CASE WHEN p.is_transfer THEN t.memo ELSE f.memo END AS memo,
       CASE WHEN p.is_transfer THEN t.metadata ELSE f.metadata END AS metadata,
       CASE WHEN p.is_transfer THEN t.idempotency_key ELSE f.idempotency_key END AS idempotency_key,
       COALESCE(e.at, f.at) AS at,
       COALESCE(e.accounts, ARRAY[f.account_id]) AS leg_accounts,
       COALESCE(e.amounts, ARRAY[0::numeric]) AS leg_amounts,
       COALESCE(e.balances, ARRAY[f.balance]) AS leg_balances,
       COALESCE(e.versions, ARRAY[f.version]) AS leg_versions,
       CASE WHEN f.hold_id IS NULL THEN f.status::text END AS status,
       CASE WHEN f.hold_id IS NULL THEN f.min_balance END AS min_balance,
       CASE WHEN f.hold_id IS NULL THEN f.max_balance END AS max_balance
  FROM pos p
  LEFT JOIN t ON p.is_transfer AND t.id = p.position
  LEFT JOIN e ON p.is_transfer AND e.transfer_id = p.position
  LEFT JOIN f ON NOT p.is_transfer AND f.position = p.position
 ORDER BY p.position

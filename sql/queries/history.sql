-- $1 account id, $2 account_version to start after (0 = from the start), $3 page size.
-- Served by the entries_account_version index; oldest first.
SELECT e.id, e.transfer_id, e.account_id,
       CASE WHEN e.account_id = t.from_account THEN t.to_account ELSE t.from_account END AS counterparty,
       e.amount, e.balance_after, e.account_version, t.reverses, t.memo, e.created_at
  FROM wallet_ledger.entries e
  JOIN wallet_ledger.transfers t ON t.id = e.transfer_id
 WHERE e.account_id = $1 AND e.account_version > $2
 ORDER BY e.account_version
 LIMIT $3

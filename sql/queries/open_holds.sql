-- $1 account id, $2 most rows. Served by the holds_open_by_account partial index.
SELECT id, from_account, to_account, amount, expires_at, memo, created_at
  FROM wallet_ledger.holds
 WHERE from_account = $1 AND state = 'pending'
 ORDER BY id
 LIMIT $2

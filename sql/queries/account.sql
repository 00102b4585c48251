-- $1 account id.
SELECT id, currency, balance, min_balance, max_balance, held, status, version, name, created_at, external_id, metadata
  FROM wallet_ledger.accounts WHERE id = $1

-- $1 external id. Served by the unique index accounts_external_id.
SELECT id, currency, balance, min_balance, max_balance, held, status, version, name, created_at, external_id, metadata
  FROM wallet_ledger.accounts WHERE external_id = $1

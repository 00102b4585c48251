-- $1 currency text, $2 min_balance numeric (NULL = unbounded), $3 name text, $4 max_balance
-- numeric (NULL = none), $5 external_id text (NULL = none), $6 metadata jsonb (NULL = '{}').
-- Opens at balance 0, open.
INSERT INTO wallet_ledger.accounts (currency, min_balance, name, max_balance, external_id, metadata)
VALUES ($1, $2::numeric, $3, $4::numeric, $5::text, COALESCE($6::jsonb, '{}'::jsonb))
RETURNING id, currency, balance, min_balance, max_balance, held, status, version, name, created_at, external_id, metadata

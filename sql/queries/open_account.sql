-- $1 currency text, $2 min_balance numeric (NULL = unbounded), $3 name text, $4 external_id
-- text (NULL = none), $5 metadata jsonb (NULL = '{}'). Opens at balance 0.
INSERT INTO wallet_ledger.accounts (currency, min_balance, name, external_id, metadata)
VALUES ($1, $2, $3, $4, COALESCE($5::jsonb, '{}'::jsonb))
RETURNING id, currency, balance, min_balance, held, version, name, created_at, external_id, metadata

-- $1 currency text, $2 min_balance numeric (NULL = unbounded), $3 name text, $4 max_balance
-- numeric (NULL = none). Opens at balance 0, open.
INSERT INTO wallet_ledger.accounts (currency, min_balance, name, max_balance)
VALUES ($1, $2, $3, $4)
RETURNING id, currency, balance, min_balance, max_balance, held, status, version, name, created_at

-- $1 currency text, $2 min_balance numeric (NULL = unbounded), $3 name text. Opens at balance 0.
INSERT INTO wallet_ledger.accounts (currency, min_balance, name)
VALUES ($1, $2, $3)
RETURNING id, currency, balance, min_balance, held, version, name, created_at

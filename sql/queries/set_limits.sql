-- $1 account id, $2 set the floor?, $3 floor (NULL = unbounded), $4 set the ceiling?, $5 ceiling
-- (NULL = none), $6 lock mode, $7 lock timeout ms. One statement, under the account's row lock.
SELECT outcome, id, currency, balance, min_balance, max_balance, held, status, version, name, created_at
  FROM wallet_ledger.set_limits($1, $2, $3, $4, $5, $6, $7)

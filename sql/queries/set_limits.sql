-- $1 account id, $2 set the floor?, $3 floor (NULL = unbounded), $4 set the ceiling?, $5 ceiling
-- (NULL = none), $6 lock mode, $7 lock timeout ms. One statement, under the account's row lock.
-- external_id and metadata never change after opening: read beside the function's answer.
SELECT s.outcome, s.id, s.currency, s.balance, s.min_balance, s.max_balance, s.held, s.status, s.version,
       s.name, s.created_at, a.external_id, a.metadata
  FROM wallet_ledger.set_limits($1, $2, $3, $4, $5, $6, $7) s
  LEFT JOIN wallet_ledger.accounts a ON a.id = s.id

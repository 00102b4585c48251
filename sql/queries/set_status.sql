-- $1 account id, $2 action ('freeze', 'unfreeze', 'close'), $3 lock mode, $4 lock timeout ms.
-- One statement: the account's row lock, the check and the change in one implicit transaction.
SELECT outcome, id, currency, balance, min_balance, max_balance, held, status, version, name, created_at
  FROM wallet_ledger.set_status($1, $2, $3, $4)

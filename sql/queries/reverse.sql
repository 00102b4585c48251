-- $1 transfer to reverse, $2 amount (NULL = all that is left), $3 idempotency key, $4 memo,
-- $5 lock mode, $6 lock timeout ms, $7 the reversal's metadata jsonb (NULL = none). One
-- statement: the original's row lock, then the accounts in ascending id, the checks and the
-- writes, in one implicit transaction.
SELECT outcome, transfer_id, from_account, to_account, amount, from_balance, to_balance, account,
       available, currency_scale
  FROM wallet_ledger.reverse($1, $2, $3, $4, $5, $6, $7)

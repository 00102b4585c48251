-- $1 from, $2 to, $3 amount (at most), $4 idempotency key, $5 memo, $6 lock mode, $7 lock
-- timeout ms, $8 metadata jsonb (NULL = none). A sweep: one statement, one implicit
-- transaction, like transfer.sql; `amount` is what moved.
SELECT outcome, transfer_id, from_balance, to_balance, account, available,
       from_currency, to_currency, currency_scale, lock_wait_us, amount
  FROM wallet_ledger.transfer_up_to($1, $2, $3, $4, $5, $6, $7, $8)

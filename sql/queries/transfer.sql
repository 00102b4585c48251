-- $1 from, $2 to, $3 amount, $4 idempotency key, $5 memo, $6 lock mode, $7 lock timeout ms.
-- One statement, run outside an explicit transaction: the whole transfer (locks in ascending
-- id order, checks, updates, records) is one implicit transaction and one round trip.
SELECT outcome, transfer_id, from_balance, to_balance, account, available,
       from_currency, to_currency, currency_scale, lock_wait_us
  FROM wallet_ledger.transfer($1, $2, $3, $4, $5, $6, $7)

-- transfer.sql with metadata: $1 from, $2 to, $3 amount, $4 idempotency key, $5 memo, $6 lock
-- mode, $7 lock timeout ms, $8 metadata jsonb (an object; sent only when there is some: a
-- transfer without metadata is sent as transfer.sql, which the Citus form of transfer() takes too).
SELECT outcome, transfer_id, from_balance, to_balance, account, available,
       from_currency, to_currency, currency_scale, lock_wait_us
  FROM wallet_ledger.transfer($1, $2, $3, $4, $5, $6, $7, $8)

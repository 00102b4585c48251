-- post.sql with metadata: $1 account[], $2 signed amount[], $3 idempotency key, $4 memo, $5 lock
-- mode, $6 lock timeout ms, $7 metadata jsonb (an object; sent only when there is some: a
-- posting without metadata is sent as post.sql). One statement, one implicit transaction, one
-- round trip.
SELECT outcome, transfer_id, balances, account, available, currency, amount_sum, currency_scale
  FROM wallet_ledger.post($1, $2, $3, $4, $5, $6, $7)

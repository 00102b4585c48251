-- hold.sql with metadata: $1 from, $2 to, $3 amount, $4 expires in (ms), $5 idempotency key,
-- $6 memo, $7 lock mode, $8 lock timeout ms, $9 metadata jsonb (an object; sent only when there
-- is some: a hold without metadata is sent as hold.sql, which the Citus form of hold() takes too).
SELECT outcome, hold_id, expires_at, available, account, from_currency, to_currency, currency_scale
  FROM wallet_ledger.hold($1, $2, $3, $4, $5, $6, $7, $8, $9)

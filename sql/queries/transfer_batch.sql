-- $1 from[], $2 to[], $3 amount[], $4 idempotency key[], $5 memo[], $6 lock mode, $7 lock timeout ms,
-- $8 every account id once, ascending, $9/$10 each item's from/to position in $8 (1-based),
-- $11 each item a sweep (up to its amount)?, $12 each item's metadata jsonb[] (NULL element = none).
-- One statement, run outside an explicit transaction: the whole batch (one ordered lock of every
-- account, per-item decisions, set-based writes) is one implicit transaction and one round trip.
-- outcome: 'ok' when some item applied or replayed, else 'refused' (for a caller's savepoint).
SELECT CASE WHEN 'ok' = ANY (outcomes) OR 'replayed' = ANY (outcomes) THEN 'ok' ELSE 'refused' END AS outcome,
       outcomes, transfer_ids, from_balances, to_balances, accounts, availables,
       from_currencies, to_currencies, currency_scales, amounts
  FROM wallet_ledger.transfer_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)

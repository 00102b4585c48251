-- $1, $2 the page's lower bound (created_at timestamptz, id bigint), exclusive: the cursor or
-- "opened after" (as (time, i64::MAX)), whichever is later, both NULL for none; one row bound,
-- so that it is where the index scan starts. $3 opened before timestamptz, $4 currency text,
-- $5 name prefix text, $6 metadata contained jsonb (each NULL = no filter), $7 page size + 1,
-- $8 status text (NULL = any).
-- Accounts of one currency: served by accounts_currency_listing (currency, created_at, id).
-- Reads only: takes no row lock.
SELECT a.id, a.currency, a.balance, a.min_balance, a.max_balance, a.held, a.status, a.version, a.name, a.created_at,
       a.external_id, a.metadata
  FROM wallet_ledger.accounts a
 WHERE (a.created_at, a.id) > (COALESCE($1::timestamptz, '-infinity'), COALESCE($2::bigint, 0))
   AND a.created_at < COALESCE($3::timestamptz, 'infinity')
   AND a.currency = $4
   AND ($4::text IS NULL OR a.currency = $4)
   AND ($5::text IS NULL OR a.name ^@ $5)
   AND ($6::jsonb IS NULL OR a.metadata @> $6)
   AND ($8::text IS NULL OR a.status = $8)
 ORDER BY a.created_at, a.id
 LIMIT $7

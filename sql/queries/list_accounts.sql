-- $1 cursor created_at timestamptz, $2 cursor id bigint (both NULL on the first page),
-- $3 opened after timestamptz, $4 opened before timestamptz, $5 currency text, $6 name prefix
-- text, $7 metadata contained jsonb (each NULL = no filter), $8 page size + 1.
-- All accounts, in (created_at, id) order: served by accounts_listing (the cursor and the
-- opened after/before bounds are its index conditions).
-- Reads only: takes no row lock.
SELECT a.id, a.currency, a.balance, a.min_balance, a.held, a.version, a.name, a.created_at,
       a.external_id, a.metadata
  FROM wallet_ledger.accounts a
 WHERE (a.created_at, a.id) > (COALESCE($1::timestamptz, '-infinity'), COALESCE($2::bigint, 0))
   AND a.created_at > COALESCE($3::timestamptz, '-infinity')
   AND a.created_at < COALESCE($4::timestamptz, 'infinity')
   AND ($5::text IS NULL OR a.currency = $5)
   AND ($6::text IS NULL OR a.name ^@ $6)
   AND ($7::jsonb IS NULL OR a.metadata @> $7)
 ORDER BY a.created_at, a.id
 LIMIT $8

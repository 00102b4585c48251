-- Citus step 4: lock_accounts again, after core migration 9.
--
-- Core migration 9 gives accounts.held, min_balance and version domain types (their single-column
-- rules, checked only when the column is written). A plpgsql RETURN QUERY must return exactly
-- the types its function declares, so the Citus form of lock_accounts (step 1) is restated with
-- those columns cast to numeric and bigint; nothing else changes. On a cluster created after
-- core migration 9, step 1 runs after it and this step repairs step 1's form at once.

-- lock_accounts, Citus form, as in step 1.
CREATE OR REPLACE FUNCTION wallet_ledger.lock_accounts(p_ids bigint[], p_lock_mode smallint, p_lock_timeout_ms integer)
RETURNS TABLE (id bigint, currency text, balance numeric, held numeric, min_balance numeric,
               version bigint, scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id bigint;
BEGIN
    IF p_lock_mode = 2 THEN
        RAISE EXCEPTION 'wallet-ledger on Citus: lock_timeout is not supported, use block or nowait'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    FOR v_id IN SELECT DISTINCT u.x FROM unnest(p_ids) u(x) ORDER BY u.x LOOP
        IF p_lock_mode = 1 THEN
            RETURN QUERY
                SELECT a.id, a.currency, a.balance, a.held::numeric, a.min_balance::numeric, a.version::bigint, c.scale
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = v_id FOR NO KEY UPDATE OF a NOWAIT;
        ELSE
            RETURN QUERY
                SELECT a.id, a.currency, a.balance, a.held::numeric, a.min_balance::numeric, a.version::bigint, c.scale
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = v_id FOR NO KEY UPDATE OF a;
        END IF;
    END LOOP;
END
$fn$;

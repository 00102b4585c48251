-- Migration 2: the lock plan and the transfer path as server-side functions, so the whole
-- lock -> check -> update -> record sequence costs one client round trip and the rows stay
-- locked only for the server's own work, never for a network round trip.

-- lock_accounts: THE lock statement of the ledger. Every path that changes accounts locks
-- them here, all at once, in ascending id order (FOR NO KEY UPDATE: the lock an UPDATE of a
-- non-key column takes anyway; unlike FOR UPDATE it does not block other tables' foreign-key
-- checks on the account, so a backend's own rows referencing accounts cannot deadlock with it): PostgreSQL locks rows as the sorted rows come
-- out of the sort, so every transaction locks in the same global order, and no two can wait on
-- each other in a cycle (no deadlock). Duplicates in p_ids are harmless (IN dedupes).
-- p_lock_mode: 0 = block, 1 = NOWAIT (55P03 at once), 2 = lock_timeout p_lock_timeout_ms for
-- the lock statement only (restored afterwards, so a caller's own transaction keeps its setting).
-- Returns the locked rows (missing ids simply have no row), with their currency's scale.
CREATE FUNCTION wallet_ledger.lock_accounts(p_ids bigint[], p_lock_mode smallint, p_lock_timeout_ms integer)
RETURNS TABLE (id bigint, currency text, balance numeric, held numeric, min_balance numeric,
               version bigint, scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_saved text;
BEGIN
    IF p_lock_mode = 1 THEN
        RETURN QUERY
            SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
              FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
             WHERE a.id = ANY (p_ids) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT;
        RETURN;
    END IF;
    IF p_lock_mode = 2 THEN
        v_saved := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    END IF;
    RETURN QUERY
        SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
          FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
         WHERE a.id = ANY (p_ids) ORDER BY a.id FOR NO KEY UPDATE OF a;
    IF p_lock_mode = 2 THEN
        PERFORM set_config('lock_timeout', v_saved, true);
    END IF;
END
$fn$;

-- transfer: p_from, p_to (account ids), p_amount (> 0, checked by the caller and by CHECK),
-- p_key (idempotency key, never NULL from the library: calls without a caller key get an
-- internal one), p_memo, p_lock_mode and p_lock_timeout_ms as for lock_accounts.
-- Outcome codes (the Rust side maps each one to a typed error):
--   ok, replayed, idempotency_conflict, account_not_found (account), currency_mismatch,
--   invalid_scale (currency_scale), insufficient_funds (account, available).
-- A refusal writes nothing. Available = balance - held (open holds) - floor.
CREATE FUNCTION wallet_ledger.transfer(
    p_from bigint, p_to bigint, p_amount numeric, p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer,
    OUT outcome text, OUT transfer_id bigint, OUT from_balance numeric, OUT to_balance numeric,
    OUT account bigint, OUT available numeric, OUT from_currency text, OUT to_currency text,
    OUT currency_scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    r      record;
    v_from record;
    v_to   record;
    v_prev wallet_ledger.transfers%ROWTYPE;
    v_from_version bigint;
    v_to_version   bigint;
    v_has_from     boolean := false;
    v_has_to       boolean := false;
    v_saved        text;
BEGIN
    -- Idempotency: a committed key answers before any lock is taken.
    SELECT * INTO v_prev FROM wallet_ledger.transfers t WHERE t.idempotency_key = p_key;
    IF FOUND THEN
        transfer_id := v_prev.id;
        IF v_prev.from_account = p_from AND v_prev.to_account = p_to
           AND v_prev.amount = p_amount AND v_prev.memo IS NOT DISTINCT FROM p_memo THEN
            outcome := 'replayed';
            SELECT e.balance_after INTO from_balance FROM wallet_ledger.entries e
             WHERE e.transfer_id = v_prev.id AND e.account_id = p_from;
            SELECT e.balance_after INTO to_balance FROM wallet_ledger.entries e
             WHERE e.transfer_id = v_prev.id AND e.account_id = p_to;
        ELSE
            outcome := 'idempotency_conflict';
        END IF;
        RETURN;
    END IF;

    -- The lock statement of lock_accounts(), written out here: on the hottest path the call to a
    -- set-returning function cost about a fifth of the throughput at 16 clients (docs/design.md).
    IF p_lock_mode = 1 THEN
        FOR r IN SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
                   FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                  WHERE a.id IN (p_from, p_to) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT LOOP
            IF r.id = p_from THEN v_from := r; v_has_from := true; ELSE v_to := r; v_has_to := true; END IF;
        END LOOP;
    ELSE
        IF p_lock_mode = 2 THEN
            v_saved := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
        END IF;
        FOR r IN SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
                   FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                  WHERE a.id IN (p_from, p_to) ORDER BY a.id FOR NO KEY UPDATE OF a LOOP
            IF r.id = p_from THEN v_from := r; v_has_from := true; ELSE v_to := r; v_has_to := true; END IF;
        END LOOP;
        IF p_lock_mode = 2 THEN
            PERFORM set_config('lock_timeout', v_saved, true);
        END IF;
    END IF;

    -- Checks, on the locked values.
    IF NOT v_has_from THEN
        outcome := 'account_not_found'; account := p_from; RETURN;
    END IF;
    IF NOT v_has_to THEN
        outcome := 'account_not_found'; account := p_to; RETURN;
    END IF;
    from_currency := v_from.currency;
    to_currency := v_to.currency;
    currency_scale := v_from.scale;
    IF v_from.currency <> v_to.currency THEN
        outcome := 'currency_mismatch'; RETURN;
    END IF;
    IF min_scale(p_amount) > v_from.scale THEN
        outcome := 'invalid_scale'; RETURN;
    END IF;
    p_amount := round(p_amount, v_from.scale); -- store amounts at the currency's scale
    IF v_from.min_balance IS NOT NULL AND v_from.balance - v_from.held - p_amount < v_from.min_balance THEN
        outcome := 'insufficient_funds'; account := p_from;
        available := v_from.balance - v_from.held - v_from.min_balance;
        RETURN;
    END IF;

    -- Writes. Both rows are locked by this transaction, so each UPDATE touches exactly one row.
    UPDATE wallet_ledger.accounts a SET balance = a.balance - p_amount, version = a.version + 1
     WHERE a.id = p_from RETURNING a.balance, a.version INTO from_balance, v_from_version;
    UPDATE wallet_ledger.accounts a SET balance = a.balance + p_amount, version = a.version + 1
     WHERE a.id = p_to RETURNING a.balance, a.version INTO to_balance, v_to_version;

    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, memo)
    VALUES (p_from, p_to, p_amount, p_key, p_memo) RETURNING id INTO transfer_id;

    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    VALUES (transfer_id, p_from, -p_amount, from_balance, v_from_version),
           (transfer_id, p_to, p_amount, to_balance, v_to_version);

    outcome := 'ok';
END
$fn$;

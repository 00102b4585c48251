-- Migration 5: transfer() reports how long it waited for its row locks (lock_wait_us: the
-- time of its one lock statement, microseconds; NULL when it answered before locking, as a
-- replay does), so that the library can count lock waits (Ledger::stats) and put them in its
-- tracing spans. Two clock_timestamp() calls; nothing else changes. The OUT columns change, so
-- the function is dropped and created again, in the migration's transaction.
DROP FUNCTION wallet_ledger.transfer(bigint, bigint, numeric, text, text, smallint, integer);

CREATE FUNCTION wallet_ledger.transfer(
    p_from bigint, p_to bigint, p_amount numeric, p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer,
    OUT outcome text, OUT transfer_id bigint, OUT from_balance numeric, OUT to_balance numeric,
    OUT account bigint, OUT available numeric, OUT from_currency text, OUT to_currency text,
    OUT currency_scale smallint, OUT lock_wait_us bigint)
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
    v_lock_start   timestamptz;
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

    v_lock_start := clock_timestamp();
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

    lock_wait_us := (extract(epoch FROM clock_timestamp() - v_lock_start) * 1000000)::bigint;

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

-- Citus step 3: the Citus forms of transfer and hold again, after core migration 7.
--
-- Core migration 7 (account states, ceilings, reversals) redefines transfer() and hold() in
-- their core form. On a cluster created after it, Citus step 1 and 2 replace them as before;
-- on a cluster migrated before it, core migration 7 runs after step 2 and would leave the core
-- forms in place, which lock both accounts with one statement (refused across shards) and keep
-- caller keys in transfers instead of transfer_keys. This step restates step 2's definitions,
-- unchanged, so every cluster ends with the Citus forms.
--
-- The Citus forms do not check account states or ceilings: in Citus mode the library refuses
-- freeze, unfreeze, close, limit changes, ceilings and reversals (LedgerError::Unsupported), so
-- every account stays open without a ceiling. docs/citus.md says what enforcing them would take.
-- Upgrading a cluster: stop the writers while the core and Citus migrations run (between the
-- two, transfers and holds run the core forms).

-- transfer, Citus form, as in step 1 with the key's lock after the gate.
CREATE OR REPLACE FUNCTION wallet_ledger.transfer(
    p_from bigint, p_to bigint, p_amount numeric, p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer,
    OUT outcome text, OUT transfer_id bigint, OUT from_balance numeric, OUT to_balance numeric,
    OUT account bigint, OUT available numeric, OUT from_currency text, OUT to_currency text,
    OUT currency_scale smallint, OUT lock_wait_us bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_caller_key boolean := left(p_key, 1) <> '~';
    v_key    wallet_ledger.transfer_keys%ROWTYPE;
    v_prev   wallet_ledger.transfers%ROWTYPE;
    v_lo     bigint := least(p_from, p_to);
    v_hi     bigint := greatest(p_from, p_to);
    v_first  record;
    v_second record;
    v_from   record;
    v_to     record;
    v_has_first  boolean;
    v_has_second boolean;
    v_from_version bigint;
    v_to_version   bigint;
BEGIN
    PERFORM wallet_ledger.writer_gate();
    PERFORM wallet_ledger.key_gate(p_key);
    IF p_lock_mode = 2 THEN
        RAISE EXCEPTION 'wallet-ledger on Citus: lock_timeout is not supported, use block or nowait'
            USING ERRCODE = 'feature_not_supported';
    END IF;

    -- Idempotency. A caller key is claimed first, in transfer_keys (unique across the cluster):
    -- a concurrent call with the same key waits here for the claimer's commit, holding no other
    -- lock, then finds its row (replay) or, if the claimer was refused and released the key,
    -- claims it. An internal key is only ever repeated by the retry of its own call.
    IF v_caller_key THEN
        INSERT INTO wallet_ledger.transfer_keys (key, from_account, to_account, amount, memo)
        VALUES (p_key, p_from, p_to, p_amount, p_memo) ON CONFLICT (key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_key FROM wallet_ledger.transfer_keys k WHERE k.key = p_key;
            transfer_id := v_key.transfer_id;
            IF v_key.from_account = p_from AND v_key.to_account = p_to
               AND v_key.amount = p_amount AND v_key.memo IS NOT DISTINCT FROM p_memo THEN
                outcome := 'replayed';
                SELECT e.balance_after INTO from_balance FROM wallet_ledger.entries e
                 WHERE e.account_id = p_from AND e.transfer_id = v_key.transfer_id;
                SELECT e.balance_after INTO to_balance FROM wallet_ledger.entries e
                 WHERE e.account_id = p_to AND e.transfer_id = v_key.transfer_id;
            ELSE
                outcome := 'idempotency_conflict';
            END IF;
            RETURN;
        END IF;
    ELSE
        SELECT * INTO v_prev FROM wallet_ledger.transfers t
         WHERE t.from_account = p_from AND t.idempotency_key = p_key;
        IF FOUND THEN
            transfer_id := v_prev.id;
            outcome := 'replayed';
            SELECT e.balance_after INTO from_balance FROM wallet_ledger.entries e
             WHERE e.account_id = p_from AND e.transfer_id = v_prev.id;
            SELECT e.balance_after INTO to_balance FROM wallet_ledger.entries e
             WHERE e.account_id = p_to AND e.transfer_id = v_prev.id;
            RETURN;
        END IF;
    END IF;

    -- One single-shard lock statement per account, lower id first.
    IF p_lock_mode = 1 THEN
        SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale INTO v_first
          FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
         WHERE a.id = v_lo FOR NO KEY UPDATE OF a NOWAIT;
        v_has_first := FOUND;
        SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale INTO v_second
          FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
         WHERE a.id = v_hi FOR NO KEY UPDATE OF a NOWAIT;
        v_has_second := FOUND;
    ELSE
        SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale INTO v_first
          FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
         WHERE a.id = v_lo FOR NO KEY UPDATE OF a;
        v_has_first := FOUND;
        SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale INTO v_second
          FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
         WHERE a.id = v_hi FOR NO KEY UPDATE OF a;
        v_has_second := FOUND;
    END IF;

    -- Checks, on the locked values; a refusal releases a claimed key and writes nothing else.
    IF NOT (CASE WHEN p_from = v_lo THEN v_has_first ELSE v_has_second END) THEN
        outcome := 'account_not_found'; account := p_from;
    ELSIF NOT (CASE WHEN p_to = v_lo THEN v_has_first ELSE v_has_second END) THEN
        outcome := 'account_not_found'; account := p_to;
    ELSE
        IF p_from = v_lo THEN v_from := v_first; v_to := v_second; ELSE v_from := v_second; v_to := v_first; END IF;
        from_currency := v_from.currency;
        to_currency := v_to.currency;
        currency_scale := v_from.scale;
        IF v_from.currency <> v_to.currency THEN
            outcome := 'currency_mismatch';
        ELSIF min_scale(p_amount) > v_from.scale THEN
            outcome := 'invalid_scale';
        ELSIF v_from.min_balance IS NOT NULL
              AND v_from.balance - v_from.held - round(p_amount, v_from.scale) < v_from.min_balance THEN
            outcome := 'insufficient_funds'; account := p_from;
            available := v_from.balance - v_from.held - v_from.min_balance;
        END IF;
    END IF;
    IF outcome IS NOT NULL THEN
        IF v_caller_key THEN
            DELETE FROM wallet_ledger.transfer_keys k WHERE k.key = p_key;
        END IF;
        RETURN;
    END IF;
    p_amount := round(p_amount, v_from.scale);

    UPDATE wallet_ledger.accounts a SET balance = a.balance - p_amount, version = a.version + 1
     WHERE a.id = p_from RETURNING a.balance, a.version INTO from_balance, v_from_version;
    UPDATE wallet_ledger.accounts a SET balance = a.balance + p_amount, version = a.version + 1
     WHERE a.id = p_to RETURNING a.balance, a.version INTO to_balance, v_to_version;
    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, memo)
    VALUES (p_from, p_to, p_amount, p_key, p_memo) RETURNING id INTO transfer_id;
    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    VALUES (transfer_id, p_from, -p_amount, from_balance, v_from_version);
    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    VALUES (transfer_id, p_to, p_amount, to_balance, v_to_version);
    IF v_caller_key THEN
        UPDATE wallet_ledger.transfer_keys k SET transfer_id = transfer.transfer_id WHERE k.key = p_key;
    END IF;
    outcome := 'ok';
END
$fn$;

-- hold, Citus form, as in step 1 with the key's lock after the gate.
CREATE OR REPLACE FUNCTION wallet_ledger.hold(
    p_from bigint, p_to bigint, p_amount numeric, p_expires_in_ms bigint, p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer,
    OUT outcome text, OUT hold_id bigint, OUT expires_at timestamptz, OUT available numeric,
    OUT account bigint, OUT from_currency text, OUT to_currency text, OUT currency_scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    r      record;
    v_from record;
    v_to   record;
    v_key  wallet_ledger.hold_keys%ROWTYPE;
    v_has_from boolean := false;
    v_has_to   boolean := false;
BEGIN
    PERFORM wallet_ledger.writer_gate();
    IF p_key IS NOT NULL THEN
        PERFORM wallet_ledger.key_gate(p_key);
        INSERT INTO wallet_ledger.hold_keys (key, from_account, to_account, amount, memo)
        VALUES (p_key, p_from, p_to, p_amount, p_memo) ON CONFLICT (key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_key FROM wallet_ledger.hold_keys k WHERE k.key = p_key;
            hold_id := v_key.hold_id;
            expires_at := v_key.expires_at;
            IF v_key.from_account = p_from AND v_key.to_account = p_to
               AND v_key.amount = p_amount AND v_key.memo IS NOT DISTINCT FROM p_memo THEN
                outcome := 'replayed';
            ELSE
                outcome := 'idempotency_conflict';
            END IF;
            RETURN;
        END IF;
    END IF;

    FOR r IN SELECT * FROM wallet_ledger.lock_accounts(ARRAY[p_from, p_to], p_lock_mode, p_lock_timeout_ms) LOOP
        IF r.id = p_from THEN v_from := r; v_has_from := true; ELSE v_to := r; v_has_to := true; END IF;
    END LOOP;
    IF NOT v_has_from THEN
        outcome := 'account_not_found'; account := p_from;
    ELSIF NOT v_has_to THEN
        outcome := 'account_not_found'; account := p_to;
    ELSE
        from_currency := v_from.currency;
        to_currency := v_to.currency;
        currency_scale := v_from.scale;
        IF v_from.currency <> v_to.currency THEN
            outcome := 'currency_mismatch';
        ELSIF min_scale(p_amount) > v_from.scale THEN
            outcome := 'invalid_scale';
        ELSIF v_from.min_balance IS NOT NULL
              AND v_from.balance - v_from.held - round(p_amount, v_from.scale) < v_from.min_balance THEN
            outcome := 'insufficient_funds'; account := p_from;
            available := v_from.balance - v_from.held - v_from.min_balance;
        END IF;
    END IF;
    IF outcome IS NOT NULL THEN
        IF p_key IS NOT NULL THEN
            DELETE FROM wallet_ledger.hold_keys k WHERE k.key = p_key;
        END IF;
        RETURN;
    END IF;
    p_amount := round(p_amount, v_from.scale);

    UPDATE wallet_ledger.accounts a SET held = a.held + p_amount WHERE a.id = p_from;
    INSERT INTO wallet_ledger.holds (from_account, to_account, amount, expires_at, idempotency_key, memo)
    VALUES (p_from, p_to, p_amount, clock_timestamp() + p_expires_in_ms * interval '1 millisecond', p_key, p_memo)
    RETURNING id, holds.expires_at INTO hold_id, expires_at;
    INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES (hold_id, 'created', p_amount);
    IF p_key IS NOT NULL THEN
        UPDATE wallet_ledger.hold_keys k SET hold_id = hold.hold_id, expires_at = hold.expires_at
         WHERE k.key = p_key;
    END IF;
    outcome := 'ok';
END
$fn$;

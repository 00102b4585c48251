-- Migration 9: the same rules, cheaper to check on the hot path.
--
-- PostgreSQL prepares every CHECK constraint of a table again for each INSERT or UPDATE
-- statement on it (reading the stored expression back from its text form and planning it),
-- whatever columns the statement writes; docs/benchmarks.md ("Server work per transfer") has
-- the measurements. So:
--   - every rule on one column of accounts is a domain instead of a table CHECK: a domain's
--     rule is checked whenever a value is written to that column, from an expression
--     PostgreSQL keeps prepared, and not when another column changes. The constraints keep
--     their names, so an error names the same rule as before. The exception is the balance's
--     magnitude: it stays a table CHECK, so that a statement binding a parameter to `balance`
--     (the test kit's broken controls do) still sends it as plain numeric;
--   - the rules that tie columns together stay table CHECKs (accounts_floor,
--     accounts_closed_empty, and accounts_ceiling's `balance <= max_balance`);
--   - transfer() updates both balances in one statement.
-- Every rule is still enforced by the database on every write, whoever makes it. A statement
-- that binds a parameter directly to a domain column (`SET held = $1`) gets the domain as the
-- parameter's type; write `$1::numeric` (the library's own statements do).
--
-- The domains are made without constraints first, so that changing the columns' types does not
-- rewrite the table; adding each constraint then checks the existing rows once.

ALTER TABLE wallet_ledger.accounts
    DROP CONSTRAINT accounts_status,
    DROP CONSTRAINT accounts_external_id_length,
    DROP CONSTRAINT accounts_metadata_object,
    DROP CONSTRAINT accounts_metadata_size,
    DROP CONSTRAINT accounts_held_check,
    DROP CONSTRAINT accounts_version_check,
    DROP CONSTRAINT accounts_min_balance_check,
    DROP CONSTRAINT accounts_ceiling;

CREATE DOMAIN wallet_ledger.account_status AS text;
CREATE DOMAIN wallet_ledger.account_metadata AS jsonb;
CREATE DOMAIN wallet_ledger.account_external_id AS text;
CREATE DOMAIN wallet_ledger.account_held AS numeric;
CREATE DOMAIN wallet_ledger.account_version AS bigint;
CREATE DOMAIN wallet_ledger.account_floor AS numeric;
CREATE DOMAIN wallet_ledger.account_ceiling AS numeric;

ALTER TABLE wallet_ledger.accounts
    ALTER COLUMN status TYPE wallet_ledger.account_status,
    ALTER COLUMN metadata TYPE wallet_ledger.account_metadata,
    ALTER COLUMN external_id TYPE wallet_ledger.account_external_id,
    ALTER COLUMN held TYPE wallet_ledger.account_held,
    ALTER COLUMN version TYPE wallet_ledger.account_version,
    ALTER COLUMN min_balance TYPE wallet_ledger.account_floor,
    ALTER COLUMN max_balance TYPE wallet_ledger.account_ceiling,
    -- the ceiling's tie to the balance; its own range is the domain's
    ADD CONSTRAINT accounts_ceiling CHECK (max_balance IS NULL OR balance <= max_balance);

ALTER DOMAIN wallet_ledger.account_status
    ADD CONSTRAINT accounts_status CHECK (VALUE IN ('open', 'frozen', 'closed'));
-- a JSON object of at most limits::METADATA_BYTES_MAX bytes in PostgreSQL's text form
ALTER DOMAIN wallet_ledger.account_metadata
    ADD CONSTRAINT accounts_metadata_object CHECK (jsonb_typeof(VALUE) = 'object');
ALTER DOMAIN wallet_ledger.account_metadata
    ADD CONSTRAINT accounts_metadata_size CHECK (octet_length(VALUE::text) <= 8192);
ALTER DOMAIN wallet_ledger.account_external_id
    ADD CONSTRAINT accounts_external_id_length CHECK (octet_length(VALUE) BETWEEN 1 AND 256);
-- reserved by open holds: never negative, below the magnitude a Decimal holds
ALTER DOMAIN wallet_ledger.account_held
    ADD CONSTRAINT accounts_held_check CHECK (VALUE >= 0 AND VALUE < 1e24);
ALTER DOMAIN wallet_ledger.account_version
    ADD CONSTRAINT accounts_version_check CHECK (VALUE >= 0);
-- the floor: 0 = no overdraft, negative = credit line (NULL, unbounded, passes)
ALTER DOMAIN wallet_ledger.account_floor
    ADD CONSTRAINT accounts_min_balance_check CHECK (VALUE <= 0 AND VALUE > -1e24);
-- the ceiling: at least 0 (accounts open at zero), below the magnitude a Decimal holds
ALTER DOMAIN wallet_ledger.account_ceiling
    ADD CONSTRAINT accounts_ceiling CHECK (VALUE >= 0 AND VALUE < 1e24);

-- lock_accounts and transfer, core forms; in Citus mode the Citus forms (sql/citus/) stay in
-- place and Citus step 4 restates lock_accounts there.
-- lock_accounts: migration 2's function, its columns cast to the types it declares (RETURN QUERY
-- takes no domain where its result names the base type).
-- transfer: migration 7's function with the two balance updates made one.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    EXECUTE $sql$
CREATE OR REPLACE FUNCTION wallet_ledger.lock_accounts(p_ids bigint[], p_lock_mode smallint, p_lock_timeout_ms integer)
RETURNS TABLE (id bigint, currency text, balance numeric, held numeric, min_balance numeric,
               version bigint, scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_saved text;
BEGIN
    IF p_lock_mode = 1 THEN
        RETURN QUERY
            SELECT a.id, a.currency, a.balance, a.held::numeric, a.min_balance::numeric, a.version::bigint, c.scale
              FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
             WHERE a.id = ANY (p_ids) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT;
        RETURN;
    END IF;
    IF p_lock_mode = 2 THEN
        v_saved := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    END IF;
    RETURN QUERY
        SELECT a.id, a.currency, a.balance, a.held::numeric, a.min_balance::numeric, a.version::bigint, c.scale
          FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
         WHERE a.id = ANY (p_ids) ORDER BY a.id FOR NO KEY UPDATE OF a;
    IF p_lock_mode = 2 THEN
        PERFORM set_config('lock_timeout', v_saved, true);
    END IF;
END
$fn$;
    $sql$;
    EXECUTE $sql$
CREATE OR REPLACE FUNCTION wallet_ledger.transfer(
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
        IF v_prev.from_account = p_from AND v_prev.to_account = p_to AND v_prev.reverses IS NULL
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
        FOR r IN SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.max_balance, a.status, a.version, c.scale
                   FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                  WHERE a.id IN (p_from, p_to) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT LOOP
            IF r.id = p_from THEN v_from := r; v_has_from := true; ELSE v_to := r; v_has_to := true; END IF;
        END LOOP;
    ELSE
        IF p_lock_mode = 2 THEN
            v_saved := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
        END IF;
        FOR r IN SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.max_balance, a.status, a.version, c.scale
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
    -- States: a frozen or closed account pays nothing; a closed account receives nothing.
    IF v_from.status <> 'open' THEN
        outcome := CASE WHEN v_from.status = 'frozen' THEN 'account_frozen' ELSE 'account_closed' END;
        account := p_from; RETURN;
    END IF;
    IF v_to.status = 'closed' THEN
        outcome := 'account_closed'; account := p_to; RETURN;
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
    -- The ceiling: `available` carries the credited account's max_balance.
    IF v_to.max_balance IS NOT NULL AND v_to.balance + p_amount > v_to.max_balance THEN
        outcome := 'balance_limit_exceeded'; account := p_to; available := v_to.max_balance;
        RETURN;
    END IF;

    -- Writes: both balances in one statement (the accounts' CHECKs are prepared once per
    -- statement, not once per row), each row touched exactly once: both are locked by this call.
    FOR r IN UPDATE wallet_ledger.accounts a
                SET balance = a.balance + CASE WHEN a.id = p_from THEN -p_amount ELSE p_amount END,
                    version = a.version + 1
              WHERE a.id IN (p_from, p_to)
          RETURNING a.id, a.balance, a.version LOOP
        IF r.id = p_from THEN
            from_balance := r.balance; v_from_version := r.version;
        ELSE
            to_balance := r.balance; v_to_version := r.version;
        END IF;
    END LOOP;

    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, memo)
    VALUES (p_from, p_to, p_amount, p_key, p_memo) RETURNING id INTO transfer_id;

    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    VALUES (transfer_id, p_from, -p_amount, from_balance, v_from_version),
           (transfer_id, p_to, p_amount, to_balance, v_to_version);

    outcome := 'ok';
END
$fn$;
    $sql$;
END
$do$;

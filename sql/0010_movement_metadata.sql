-- Migration 10: metadata on money movements (issue 17, phase B): the caller's JSON object on
-- transfers, postings, holds (and the captures of holds), reversals and sweeps, part of each
-- call's idempotency comparison; and the indexes behind the listings' new filters (transfers by
-- metadata, reversals, accounts by status).
--
-- The column is NULL for a movement without metadata (reads show '{}'): such a row carries no
-- value, and NULL passes the domain's checks without evaluating them (both are strict
-- expressions of the value), so a plain transfer pays nothing for the feature but the NULL.
-- The rules are domains (migration 9: a table CHECK would be prepared again for every INSERT
-- or UPDATE on transfers, whatever it writes), one per table so that an error names the
-- table's rule, as the accounts' do: a JSON object of at most limits::METADATA_BYTES_MAX bytes
-- in PostgreSQL's text form.
CREATE DOMAIN wallet_ledger.transfer_metadata AS jsonb
    CONSTRAINT transfers_metadata_object CHECK (jsonb_typeof(VALUE) = 'object')
    CONSTRAINT transfers_metadata_size CHECK (octet_length(VALUE::text) <= 8192);
CREATE DOMAIN wallet_ledger.hold_metadata AS jsonb
    CONSTRAINT holds_metadata_object CHECK (jsonb_typeof(VALUE) = 'object')
    CONSTRAINT holds_metadata_size CHECK (octet_length(VALUE::text) <= 8192);

-- No default and NULL allowed: adding the columns rewrites nothing.
ALTER TABLE wallet_ledger.transfers ADD COLUMN metadata wallet_ledger.transfer_metadata NULL;
ALTER TABLE wallet_ledger.holds ADD COLUMN metadata wallet_ledger.hold_metadata NULL;

-- Transfers by metadata (containment, @>). Partial: a transfer without metadata never inserts
-- into it; a query uses it only when it says `metadata IS NOT NULL` (the listing does).
CREATE INDEX transfers_metadata ON wallet_ledger.transfers USING gin (metadata jsonb_path_ops)
    WHERE metadata IS NOT NULL;
-- Reversals in time order, page by page. Partial: only reversals are in it (reverse() sets
-- `reverses` on the row it just inserted, the one update that puts a row in it).
CREATE INDEX transfers_reversal_listing ON wallet_ledger.transfers (created_at, id) WHERE reverses IS NOT NULL;
-- Accounts of one status in (created_at, id) order. A transfer never writes status, so its
-- updates of accounts stay HOT-eligible as before.
CREATE INDEX accounts_status_listing ON wallet_ledger.accounts (status, created_at, id);

-- capture: migration 7's function; the capture's transfer carries the hold's metadata. It has no
-- Citus form (Citus runs this one), so it is replaced in both modes; in Citus mode holds have no
-- metadata (the library refuses it there), so it copies NULL.
CREATE OR REPLACE FUNCTION wallet_ledger.capture(
    p_hold_id bigint, p_amount numeric, p_lock_mode smallint, p_lock_timeout_ms integer,
    OUT outcome text, OUT state text, OUT transfer_id bigint, OUT from_account bigint, OUT to_account bigint,
    OUT amount numeric, OUT from_balance numeric, OUT to_balance numeric, OUT available numeric,
    OUT currency_scale smallint, OUT hold_amount numeric)
LANGUAGE plpgsql AS $fn$
DECLARE
    h wallet_ledger.holds%ROWTYPE;
    r record;
    v_scale smallint;
    v_amount   numeric;
    v_transfer bigint;
    v_from_version bigint;
    v_to_version   bigint;
    v_from_status  text;
    v_to           record;
BEGIN
    SELECT * INTO h FROM wallet_ledger.lock_hold(p_hold_id, p_lock_mode, p_lock_timeout_ms);
    IF NOT FOUND THEN
        outcome := 'hold_not_found'; RETURN;
    END IF;
    from_account := h.from_account;
    to_account := h.to_account;
    hold_amount := h.amount;
    state := h.state;
    -- clock_timestamp(): the time after the hold's lock was granted, not the transaction's start
    IF h.state = 'pending' AND h.expires_at <= clock_timestamp() THEN
        state := 'expired'; -- lapsed: an expiry worker will release it; it cannot be ended otherwise
    END IF;
    IF state <> 'pending' THEN
        outcome := 'hold_not_pending';
        IF h.state = 'captured' THEN
            transfer_id := h.transfer_id;
            amount := h.captured;
            SELECT e.balance_after INTO from_balance FROM wallet_ledger.entries e
             WHERE e.transfer_id = h.transfer_id AND e.account_id = h.from_account;
            SELECT e.balance_after INTO to_balance FROM wallet_ledger.entries e
             WHERE e.transfer_id = h.transfer_id AND e.account_id = h.to_account;
        END IF;
        RETURN;
    END IF;
    v_amount := coalesce(p_amount, h.amount);
    IF v_amount > h.amount THEN
        outcome := 'exceeds_hold'; available := h.amount; RETURN;
    END IF;

    FOR r IN SELECT * FROM wallet_ledger.lock_accounts(ARRAY[h.from_account, h.to_account], p_lock_mode, p_lock_timeout_ms) LOOP
        v_scale := r.scale;
    END LOOP;
    currency_scale := v_scale;
    IF min_scale(v_amount) > v_scale THEN
        outcome := 'invalid_scale'; RETURN;
    END IF;
    v_amount := round(v_amount, v_scale);
    -- A hold taken before its source was frozen is not captured while it is frozen (it can still
    -- be voided or expire); its source cannot be closed while the hold reserves money on it.
    SELECT a.status INTO v_from_status FROM wallet_ledger.accounts a WHERE a.id = h.from_account;
    SELECT a.status, a.balance, a.max_balance INTO v_to FROM wallet_ledger.accounts a WHERE a.id = h.to_account;
    IF v_from_status = 'frozen' THEN
        outcome := 'account_frozen'; RETURN;
    END IF;
    IF v_to.status = 'closed' THEN
        outcome := 'account_closed'; RETURN;
    END IF;
    IF v_to.max_balance IS NOT NULL AND v_to.balance + v_amount > v_to.max_balance THEN
        outcome := 'balance_limit_exceeded'; available := v_to.max_balance; RETURN;
    END IF;

    UPDATE wallet_ledger.accounts a
       SET held = a.held - h.amount, balance = a.balance - v_amount, version = a.version + 1
     WHERE a.id = h.from_account RETURNING a.balance, a.version INTO from_balance, v_from_version;
    UPDATE wallet_ledger.accounts a SET balance = a.balance + v_amount, version = a.version + 1
     WHERE a.id = h.to_account RETURNING a.balance, a.version INTO to_balance, v_to_version;
    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, memo, metadata)
    VALUES (h.from_account, h.to_account, v_amount, h.memo, h.metadata) RETURNING id INTO v_transfer;
    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    VALUES (v_transfer, h.from_account, -v_amount, from_balance, v_from_version),
           (v_transfer, h.to_account, v_amount, to_balance, v_to_version);
    UPDATE wallet_ledger.holds hh SET state = 'captured', captured = v_amount, transfer_id = v_transfer,
           ended_at = now()
     WHERE hh.id = h.id;
    INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES (h.id, 'captured', v_amount);
    transfer_id := v_transfer;
    amount := v_amount;
    state := 'captured';
    outcome := 'ok';
END
$fn$;

-- The money-moving functions, core mode only. In Citus mode none of this runs: the Citus forms
-- of transfer() and hold() (sql/citus/) keep their parameters, the library sends them no
-- metadata (it refuses metadata there: LedgerError::Unsupported), and batches, postings,
-- reversals and sweeps are refused there anyway.
--
-- A movement's metadata is part of its idempotency content: a committed key with other metadata
-- (NULL and '{}' both meaning none) is a conflict. The comparison is made only in the branch
-- that found the key; the path of a new movement only writes the value.
--
-- transfer(), hold() and post() keep their old signatures for a movement without metadata (the
-- library sends those then; the Citus forms of transfer() and hold() have the same ones): each
-- is its latest body with one change in the replay branch, a committed key replays only if its
-- movement has no metadata. So the plain transfer is migration 9's function, statement for
-- statement. Beside each, a new signature with `p_metadata jsonb` last: the same body, writing
-- the metadata and comparing it on replay. transfer_batch(), reverse(), reversal_by_key() and
-- transfer_up_to() take the new parameter in place of their old signature (dropped): the
-- library always sends it (NULL for none).
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    DROP FUNCTION wallet_ledger.transfer_batch(bigint[], bigint[], numeric[], text[], text[], smallint, integer,
                                               bigint[], integer[], integer[], boolean[]);
    DROP FUNCTION wallet_ledger.reverse(bigint, numeric, text, text, smallint, integer);
    DROP FUNCTION wallet_ledger.reversal_by_key(text, bigint, numeric, text);
    DROP FUNCTION wallet_ledger.transfer_up_to(bigint, bigint, numeric, text, text, smallint, integer);
    -- transfer, without metadata: migration 9's function (both balances in one UPDATE); a
    -- committed key replays only a transfer without metadata.
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
           AND v_prev.amount = p_amount AND v_prev.memo IS NOT DISTINCT FROM p_memo
           AND coalesce(v_prev.metadata::jsonb, '{}') = '{}' THEN
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
    -- transfer, with metadata: the same, writing p_metadata and comparing it on replay.
    EXECUTE $sql$
CREATE FUNCTION wallet_ledger.transfer(
    p_from bigint, p_to bigint, p_amount numeric, p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer, p_metadata jsonb,
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
           AND v_prev.amount = p_amount AND v_prev.memo IS NOT DISTINCT FROM p_memo
           AND coalesce(v_prev.metadata::jsonb, '{}') = coalesce(p_metadata, '{}') THEN
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

    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, memo, metadata)
    VALUES (p_from, p_to, p_amount, p_key, p_memo, p_metadata) RETURNING id INTO transfer_id;

    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    VALUES (transfer_id, p_from, -p_amount, from_balance, v_from_version),
           (transfer_id, p_to, p_amount, to_balance, v_to_version);

    outcome := 'ok';
END
$fn$;
    $sql$;
    -- hold, without metadata: migration 7's function; a committed key replays only a hold
    -- without metadata.
    EXECUTE $sql$
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
    v_prev wallet_ledger.holds%ROWTYPE;
    v_has_from boolean := false;
    v_has_to   boolean := false;
    v_from_status text;
    v_to_status   text;
BEGIN
    IF p_key IS NOT NULL THEN
        SELECT * INTO v_prev FROM wallet_ledger.holds h WHERE h.idempotency_key = p_key;
        IF FOUND THEN
            hold_id := v_prev.id;
            expires_at := v_prev.expires_at;
            IF v_prev.from_account = p_from AND v_prev.to_account = p_to
               AND v_prev.amount = p_amount AND v_prev.memo IS NOT DISTINCT FROM p_memo
               AND coalesce(v_prev.metadata::jsonb, '{}') = '{}' THEN
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
        outcome := 'account_not_found'; account := p_from; RETURN;
    END IF;
    IF NOT v_has_to THEN
        outcome := 'account_not_found'; account := p_to; RETURN;
    END IF;
    SELECT a.status INTO v_from_status FROM wallet_ledger.accounts a WHERE a.id = p_from;
    SELECT a.status INTO v_to_status FROM wallet_ledger.accounts a WHERE a.id = p_to;
    IF v_from_status = 'frozen' THEN
        outcome := 'account_frozen'; account := p_from; RETURN;
    END IF;
    IF v_from_status = 'closed' OR v_to_status = 'closed' THEN
        outcome := 'account_closed'; account := CASE WHEN v_from_status = 'closed' THEN p_from ELSE p_to END;
        RETURN;
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
    p_amount := round(p_amount, v_from.scale);
    IF v_from.min_balance IS NOT NULL AND v_from.balance - v_from.held - p_amount < v_from.min_balance THEN
        outcome := 'insufficient_funds'; account := p_from;
        available := v_from.balance - v_from.held - v_from.min_balance;
        RETURN;
    END IF;

    UPDATE wallet_ledger.accounts a SET held = a.held + p_amount WHERE a.id = p_from;
    INSERT INTO wallet_ledger.holds (from_account, to_account, amount, expires_at, idempotency_key, memo)
    VALUES (p_from, p_to, p_amount, clock_timestamp() + p_expires_in_ms * interval '1 millisecond', p_key, p_memo)
    RETURNING id, holds.expires_at INTO hold_id, expires_at;
    INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES (hold_id, 'created', p_amount);
    outcome := 'ok';
END
$fn$;
    $sql$;
    -- hold, with metadata (a capture's transfer carries it).
    EXECUTE $sql$
CREATE FUNCTION wallet_ledger.hold(
    p_from bigint, p_to bigint, p_amount numeric, p_expires_in_ms bigint, p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer, p_metadata jsonb,
    OUT outcome text, OUT hold_id bigint, OUT expires_at timestamptz, OUT available numeric,
    OUT account bigint, OUT from_currency text, OUT to_currency text, OUT currency_scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    r      record;
    v_from record;
    v_to   record;
    v_prev wallet_ledger.holds%ROWTYPE;
    v_has_from boolean := false;
    v_has_to   boolean := false;
    v_from_status text;
    v_to_status   text;
BEGIN
    IF p_key IS NOT NULL THEN
        SELECT * INTO v_prev FROM wallet_ledger.holds h WHERE h.idempotency_key = p_key;
        IF FOUND THEN
            hold_id := v_prev.id;
            expires_at := v_prev.expires_at;
            IF v_prev.from_account = p_from AND v_prev.to_account = p_to
               AND v_prev.amount = p_amount AND v_prev.memo IS NOT DISTINCT FROM p_memo
               AND coalesce(v_prev.metadata::jsonb, '{}') = coalesce(p_metadata, '{}') THEN
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
        outcome := 'account_not_found'; account := p_from; RETURN;
    END IF;
    IF NOT v_has_to THEN
        outcome := 'account_not_found'; account := p_to; RETURN;
    END IF;
    SELECT a.status INTO v_from_status FROM wallet_ledger.accounts a WHERE a.id = p_from;
    SELECT a.status INTO v_to_status FROM wallet_ledger.accounts a WHERE a.id = p_to;
    IF v_from_status = 'frozen' THEN
        outcome := 'account_frozen'; account := p_from; RETURN;
    END IF;
    IF v_from_status = 'closed' OR v_to_status = 'closed' THEN
        outcome := 'account_closed'; account := CASE WHEN v_from_status = 'closed' THEN p_from ELSE p_to END;
        RETURN;
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
    p_amount := round(p_amount, v_from.scale);
    IF v_from.min_balance IS NOT NULL AND v_from.balance - v_from.held - p_amount < v_from.min_balance THEN
        outcome := 'insufficient_funds'; account := p_from;
        available := v_from.balance - v_from.held - v_from.min_balance;
        RETURN;
    END IF;

    UPDATE wallet_ledger.accounts a SET held = a.held + p_amount WHERE a.id = p_from;
    INSERT INTO wallet_ledger.holds (from_account, to_account, amount, expires_at, idempotency_key, memo, metadata)
    VALUES (p_from, p_to, p_amount, clock_timestamp() + p_expires_in_ms * interval '1 millisecond', p_key, p_memo,
            p_metadata)
    RETURNING id, holds.expires_at INTO hold_id, expires_at;
    INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES (hold_id, 'created', p_amount);
    outcome := 'ok';
END
$fn$;
    $sql$;
    -- post, without metadata: migration 7's function; a committed key replays only a posting
    -- without metadata.
    EXECUTE $sql$
CREATE OR REPLACE FUNCTION wallet_ledger.post(
    p_accounts bigint[], p_amounts numeric[], p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer,
    OUT outcome text, OUT transfer_id bigint, OUT balances numeric[], OUT account bigint,
    OUT available numeric, OUT currency text, OUT amount_sum numeric, OUT currency_scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    n         integer := coalesce(cardinality(p_accounts), 0);
    v_i       integer;
    v_k       integer;
    v_prev    wallet_ledger.transfers%ROWTYPE;
    v_saved   text;
    v_ids     bigint[];
    v_bal     numeric[];
    v_held    numeric[];
    v_min     numeric[];
    v_ver     bigint[];
    v_cur     text[];
    v_scale   smallint[];
    v_st      text[];
    v_max     numeric[];
    v_pos     bigint[];
    v_amounts numeric[] := '{}';
    v_after   numeric[] := '{}';
    v_version bigint[] := '{}';
    v_credits numeric := 0;
BEGIN
    IF n < 2 OR (SELECT count(DISTINCT x) FROM unnest(p_accounts) x) <> n THEN
        RAISE EXCEPTION 'wallet_ledger.post: at least two legs on distinct accounts' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_prev FROM wallet_ledger.transfers tr WHERE tr.idempotency_key = p_key;
    IF FOUND THEN
        transfer_id := v_prev.id;
        IF v_prev.from_account IS NULL AND v_prev.memo IS NOT DISTINCT FROM p_memo
           AND coalesce(v_prev.metadata::jsonb, '{}') = '{}'
           AND (SELECT count(*) FROM wallet_ledger.entries e WHERE e.transfer_id = v_prev.id) = n
           AND NOT EXISTS (SELECT 1 FROM unnest(p_accounts, p_amounts) AS l(id, amount)
                            WHERE NOT EXISTS (SELECT 1 FROM wallet_ledger.entries e
                                               WHERE e.transfer_id = v_prev.id AND e.account_id = l.id
                                                 AND e.amount = l.amount)) THEN
            outcome := 'replayed';
            SELECT array_agg(e.balance_after ORDER BY l.i) INTO balances
              FROM unnest(p_accounts) WITH ORDINALITY AS l(id, i)
              JOIN wallet_ledger.entries e ON e.transfer_id = v_prev.id AND e.account_id = l.id;
        ELSE
            outcome := 'idempotency_conflict';
        END IF;
        RETURN;
    END IF;

    -- The lock statement of lock_accounts(), written out and aggregated: every leg's account
    -- once, ascending id, FOR NO KEY UPDATE.
    IF p_lock_mode = 2 THEN
        v_saved := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    END IF;
    IF p_lock_mode = 1 THEN
        SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
               array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
               array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id),
               array_agg(l.status ORDER BY l.id), array_agg(l.max_balance ORDER BY l.id)
          INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale, v_st, v_max
          FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale, a.status, a.max_balance
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = ANY (p_accounts) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT) l;
    ELSE
        SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
               array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
               array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id),
               array_agg(l.status ORDER BY l.id), array_agg(l.max_balance ORDER BY l.id)
          INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale, v_st, v_max
          FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale, a.status, a.max_balance
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = ANY (p_accounts) ORDER BY a.id FOR NO KEY UPDATE OF a) l;
    END IF;
    IF p_lock_mode = 2 THEN
        PERFORM set_config('lock_timeout', v_saved, true);
    END IF;
    SELECT array_agg(p.pos ORDER BY u.i) INTO v_pos
      FROM unnest(p_accounts) WITH ORDINALITY AS u(id, i)
      LEFT JOIN unnest(v_ids) WITH ORDINALITY AS p(id, pos) ON p.id = u.id;

    -- Checks, on the locked values, all before any write.
    FOR v_i IN 1 .. n LOOP
        IF v_pos[v_i] IS NULL THEN
            outcome := 'account_not_found'; account := p_accounts[v_i]; RETURN;
        END IF;
    END LOOP;
    -- States: a frozen or closed account pays nothing; a closed account receives nothing.
    FOR v_i IN 1 .. n LOOP
        v_k := v_pos[v_i];
        IF v_st[v_k] = 'closed' OR (v_st[v_k] = 'frozen' AND p_amounts[v_i] < 0) THEN
            outcome := CASE WHEN v_st[v_k] = 'frozen' THEN 'account_frozen' ELSE 'account_closed' END;
            account := p_accounts[v_i]; RETURN;
        END IF;
    END LOOP;
    FOR v_i IN 1 .. n LOOP
        v_k := v_pos[v_i];
        IF min_scale(p_amounts[v_i]) > v_scale[v_k] THEN
            outcome := 'invalid_scale'; account := p_accounts[v_i]; currency := v_cur[v_k];
            currency_scale := v_scale[v_k];
            RETURN;
        END IF;
        v_amounts[v_i] := round(p_amounts[v_i], v_scale[v_k]);
    END LOOP;
    SELECT s.currency, s.total INTO currency, amount_sum
      FROM (SELECT v_cur[l.pos] AS currency, sum(l.amount) AS total
              FROM unnest(v_pos, v_amounts) AS l(pos, amount) GROUP BY 1) s
     WHERE s.total <> 0 ORDER BY s.currency LIMIT 1;
    IF FOUND THEN
        outcome := 'unbalanced'; RETURN;
    END IF;
    currency := NULL;
    FOR v_i IN 1 .. n LOOP
        v_k := v_pos[v_i];
        IF v_amounts[v_i] < 0 AND v_min[v_k] IS NOT NULL AND v_bal[v_k] - v_held[v_k] + v_amounts[v_i] < v_min[v_k] THEN
            outcome := 'insufficient_funds'; account := p_accounts[v_i];
            available := v_bal[v_k] - v_held[v_k] - v_min[v_k];
            RETURN;
        END IF;
        IF v_amounts[v_i] > 0 AND v_max[v_k] IS NOT NULL AND v_bal[v_k] + v_amounts[v_i] > v_max[v_k] THEN
            outcome := 'balance_limit_exceeded'; account := p_accounts[v_i];
            available := v_max[v_k]; -- the ceiling
            RETURN;
        END IF;
        v_after[v_i] := v_bal[v_k] + v_amounts[v_i];
        v_version[v_i] := v_ver[v_k] + 1;
        IF v_amounts[v_i] > 0 THEN
            v_credits := v_credits + v_amounts[v_i];
        END IF;
    END LOOP;

    -- Writes: one transfer row without from/to, one entry per leg, each account once.
    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, memo)
    VALUES (NULL, NULL, v_credits, p_key, p_memo) RETURNING id INTO transfer_id;
    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    SELECT transfer_id, l.id, l.amount, l.after, l.version
      FROM unnest(p_accounts, v_amounts, v_after, v_version) AS l(id, amount, after, version);
    UPDATE wallet_ledger.accounts a SET balance = l.after, version = l.version
      FROM unnest(p_accounts, v_after, v_version) AS l(id, after, version)
     WHERE a.id = l.id;
    balances := v_after;
    outcome := 'ok';
END
$fn$;
    $sql$;
    -- post, with metadata.
    EXECUTE $sql$
CREATE FUNCTION wallet_ledger.post(
    p_accounts bigint[], p_amounts numeric[], p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer, p_metadata jsonb,
    OUT outcome text, OUT transfer_id bigint, OUT balances numeric[], OUT account bigint,
    OUT available numeric, OUT currency text, OUT amount_sum numeric, OUT currency_scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    n         integer := coalesce(cardinality(p_accounts), 0);
    v_i       integer;
    v_k       integer;
    v_prev    wallet_ledger.transfers%ROWTYPE;
    v_saved   text;
    v_ids     bigint[];
    v_bal     numeric[];
    v_held    numeric[];
    v_min     numeric[];
    v_ver     bigint[];
    v_cur     text[];
    v_scale   smallint[];
    v_st      text[];
    v_max     numeric[];
    v_pos     bigint[];
    v_amounts numeric[] := '{}';
    v_after   numeric[] := '{}';
    v_version bigint[] := '{}';
    v_credits numeric := 0;
BEGIN
    IF n < 2 OR (SELECT count(DISTINCT x) FROM unnest(p_accounts) x) <> n THEN
        RAISE EXCEPTION 'wallet_ledger.post: at least two legs on distinct accounts' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_prev FROM wallet_ledger.transfers tr WHERE tr.idempotency_key = p_key;
    IF FOUND THEN
        transfer_id := v_prev.id;
        IF v_prev.from_account IS NULL AND v_prev.memo IS NOT DISTINCT FROM p_memo
           AND coalesce(v_prev.metadata::jsonb, '{}') = coalesce(p_metadata, '{}')
           AND (SELECT count(*) FROM wallet_ledger.entries e WHERE e.transfer_id = v_prev.id) = n
           AND NOT EXISTS (SELECT 1 FROM unnest(p_accounts, p_amounts) AS l(id, amount)
                            WHERE NOT EXISTS (SELECT 1 FROM wallet_ledger.entries e
                                               WHERE e.transfer_id = v_prev.id AND e.account_id = l.id
                                                 AND e.amount = l.amount)) THEN
            outcome := 'replayed';
            SELECT array_agg(e.balance_after ORDER BY l.i) INTO balances
              FROM unnest(p_accounts) WITH ORDINALITY AS l(id, i)
              JOIN wallet_ledger.entries e ON e.transfer_id = v_prev.id AND e.account_id = l.id;
        ELSE
            outcome := 'idempotency_conflict';
        END IF;
        RETURN;
    END IF;

    -- The lock statement of lock_accounts(), written out and aggregated: every leg's account
    -- once, ascending id, FOR NO KEY UPDATE.
    IF p_lock_mode = 2 THEN
        v_saved := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    END IF;
    IF p_lock_mode = 1 THEN
        SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
               array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
               array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id),
               array_agg(l.status ORDER BY l.id), array_agg(l.max_balance ORDER BY l.id)
          INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale, v_st, v_max
          FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale, a.status, a.max_balance
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = ANY (p_accounts) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT) l;
    ELSE
        SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
               array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
               array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id),
               array_agg(l.status ORDER BY l.id), array_agg(l.max_balance ORDER BY l.id)
          INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale, v_st, v_max
          FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale, a.status, a.max_balance
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = ANY (p_accounts) ORDER BY a.id FOR NO KEY UPDATE OF a) l;
    END IF;
    IF p_lock_mode = 2 THEN
        PERFORM set_config('lock_timeout', v_saved, true);
    END IF;
    SELECT array_agg(p.pos ORDER BY u.i) INTO v_pos
      FROM unnest(p_accounts) WITH ORDINALITY AS u(id, i)
      LEFT JOIN unnest(v_ids) WITH ORDINALITY AS p(id, pos) ON p.id = u.id;

    -- Checks, on the locked values, all before any write.
    FOR v_i IN 1 .. n LOOP
        IF v_pos[v_i] IS NULL THEN
            outcome := 'account_not_found'; account := p_accounts[v_i]; RETURN;
        END IF;
    END LOOP;
    -- States: a frozen or closed account pays nothing; a closed account receives nothing.
    FOR v_i IN 1 .. n LOOP
        v_k := v_pos[v_i];
        IF v_st[v_k] = 'closed' OR (v_st[v_k] = 'frozen' AND p_amounts[v_i] < 0) THEN
            outcome := CASE WHEN v_st[v_k] = 'frozen' THEN 'account_frozen' ELSE 'account_closed' END;
            account := p_accounts[v_i]; RETURN;
        END IF;
    END LOOP;
    FOR v_i IN 1 .. n LOOP
        v_k := v_pos[v_i];
        IF min_scale(p_amounts[v_i]) > v_scale[v_k] THEN
            outcome := 'invalid_scale'; account := p_accounts[v_i]; currency := v_cur[v_k];
            currency_scale := v_scale[v_k];
            RETURN;
        END IF;
        v_amounts[v_i] := round(p_amounts[v_i], v_scale[v_k]);
    END LOOP;
    SELECT s.currency, s.total INTO currency, amount_sum
      FROM (SELECT v_cur[l.pos] AS currency, sum(l.amount) AS total
              FROM unnest(v_pos, v_amounts) AS l(pos, amount) GROUP BY 1) s
     WHERE s.total <> 0 ORDER BY s.currency LIMIT 1;
    IF FOUND THEN
        outcome := 'unbalanced'; RETURN;
    END IF;
    currency := NULL;
    FOR v_i IN 1 .. n LOOP
        v_k := v_pos[v_i];
        IF v_amounts[v_i] < 0 AND v_min[v_k] IS NOT NULL AND v_bal[v_k] - v_held[v_k] + v_amounts[v_i] < v_min[v_k] THEN
            outcome := 'insufficient_funds'; account := p_accounts[v_i];
            available := v_bal[v_k] - v_held[v_k] - v_min[v_k];
            RETURN;
        END IF;
        IF v_amounts[v_i] > 0 AND v_max[v_k] IS NOT NULL AND v_bal[v_k] + v_amounts[v_i] > v_max[v_k] THEN
            outcome := 'balance_limit_exceeded'; account := p_accounts[v_i];
            available := v_max[v_k]; -- the ceiling
            RETURN;
        END IF;
        v_after[v_i] := v_bal[v_k] + v_amounts[v_i];
        v_version[v_i] := v_ver[v_k] + 1;
        IF v_amounts[v_i] > 0 THEN
            v_credits := v_credits + v_amounts[v_i];
        END IF;
    END LOOP;

    -- Writes: one transfer row without from/to, one entry per leg, each account once.
    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, memo, metadata)
    VALUES (NULL, NULL, v_credits, p_key, p_memo, p_metadata) RETURNING id INTO transfer_id;
    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    SELECT transfer_id, l.id, l.amount, l.after, l.version
      FROM unnest(p_accounts, v_amounts, v_after, v_version) AS l(id, amount, after, version);
    UPDATE wallet_ledger.accounts a SET balance = l.after, version = l.version
      FROM unnest(p_accounts, v_after, v_version) AS l(id, after, version)
     WHERE a.id = l.id;
    balances := v_after;
    outcome := 'ok';
END
$fn$;
    $sql$;
    -- transfer_batch: migration 7's function, with one metadata per item (p_metadata[i], NULL
    -- for none).
    EXECUTE $sql$
CREATE FUNCTION wallet_ledger.transfer_batch(
    p_from bigint[], p_to bigint[], p_amount numeric[], p_key text[], p_memo text[],
    p_lock_mode smallint, p_lock_timeout_ms integer,
    p_union bigint[], p_fpos integer[], p_tpos integer[], p_up_to boolean[], p_metadata jsonb[],
    OUT outcomes text[], OUT transfer_ids bigint[], OUT from_balances numeric[], OUT to_balances numeric[],
    OUT accounts bigint[], OUT availables numeric[], OUT from_currencies text[], OUT to_currencies text[],
    OUT currency_scales smallint[], OUT amounts numeric[])
LANGUAGE plpgsql AS $fn$
DECLARE
    n          integer := coalesce(cardinality(p_from), 0);
    r          record;
    v_i        integer;
    v_j        integer;
    v_f        integer;
    v_t        integer;
    v_amount   numeric;
    v_saved    text;
    v_seq      regclass;
    -- committed keys, per item
    v_db_id    bigint[];
    v_db_same  boolean[];
    v_db_fbal  numeric[];
    v_db_tbal  numeric[];
    v_db_amt   numeric[];
    -- keys inside the batch: the first item with each key, and the item holding it now
    v_first    integer[];
    v_holder   integer[];
    -- the locked accounts, sorted by id; positions of each item's accounts among them
    v_ids      bigint[];
    v_bal      numeric[];
    v_held     numeric[];
    v_min      numeric[];
    v_ver      bigint[];
    v_cur      text[];
    v_scale    smallint[];
    v_lim      numeric[];
    v_st       text[];
    v_max      numeric[];
    v_touched  boolean[];
    v_fpos     integer[];
    v_tpos     integer[];
    v_need     bigint[];
    v_map      integer[];
    -- what is written: transfers and entries
    v_tids     bigint[];
    w_id       bigint[] := '{}';
    w_from     bigint[] := '{}';
    w_to       bigint[] := '{}';
    w_amount   numeric[] := '{}';
    w_key      text[] := '{}';
    w_memo     text[] := '{}';
    w_meta     jsonb[] := '{}';
    e_tid      bigint[] := '{}';
    e_acc      bigint[] := '{}';
    e_amt      numeric[] := '{}';
    e_bal      numeric[] := '{}';
    e_ver      bigint[] := '{}';
    v_accepted integer := 0;
    -- the fast path: every item accepted, decided set-based
    v_simple   boolean := true;
    v_ok       boolean;
    f_amount   numeric[];
    f_from_bal numeric[];
    f_to_bal   numeric[];
    f_item     bigint[];
    a_id       bigint[];
    a_bal      numeric[];
    a_ver      bigint[];
BEGIN
    outcomes := array_fill(NULL::text, ARRAY[n]);
    transfer_ids := array_fill(NULL::bigint, ARRAY[n]);
    from_balances := array_fill(NULL::numeric, ARRAY[n]);
    to_balances := array_fill(NULL::numeric, ARRAY[n]);
    accounts := array_fill(NULL::bigint, ARRAY[n]);
    availables := array_fill(NULL::numeric, ARRAY[n]);
    from_currencies := array_fill(NULL::text, ARRAY[n]);
    to_currencies := array_fill(NULL::text, ARRAY[n]);
    currency_scales := array_fill(NULL::smallint, ARRAY[n]);
    amounts := array_fill(NULL::numeric, ARRAY[n]);
    IF n = 0 THEN
        RETURN;
    END IF;
    v_db_id := array_fill(NULL::bigint, ARRAY[n]);
    v_db_same := array_fill(NULL::boolean, ARRAY[n]);
    v_db_fbal := array_fill(NULL::numeric, ARRAY[n]);
    v_db_tbal := array_fill(NULL::numeric, ARRAY[n]);
    v_db_amt := array_fill(NULL::numeric, ARRAY[n]);
    v_simple := NOT coalesce(true = ANY (p_up_to), false);
    v_holder := array_fill(NULL::integer, ARRAY[n]);

    -- Idempotency, one statement for every key: the committed transfers holding any of them
    -- (one probe of the key's unique index per item: OFFSET 0 keeps the lateral subquery a
    -- parameterized index scan, never a scan of the whole table, whatever its estimates).
    FOR r IN SELECT k.i, tr.id,
                    coalesce(tr.from_account = p_from[k.i] AND tr.to_account = p_to[k.i]
                             AND (tr.amount = p_amount[k.i] OR (p_up_to[k.i] AND tr.amount <= p_amount[k.i]))
                             AND tr.reverses IS NULL AND tr.memo IS NOT DISTINCT FROM p_memo[k.i]
                             AND coalesce(tr.metadata::jsonb, '{}') = coalesce(p_metadata[k.i], '{}'), false) AS same,
                    tr.amount,
                    (SELECT e.balance_after FROM wallet_ledger.entries e
                      WHERE e.transfer_id = tr.id AND e.account_id = tr.from_account) AS fbal,
                    (SELECT e.balance_after FROM wallet_ledger.entries e
                      WHERE e.transfer_id = tr.id AND e.account_id = tr.to_account) AS tbal
               FROM unnest(p_key) WITH ORDINALITY AS k(key, i),
                    LATERAL (SELECT * FROM wallet_ledger.transfers t WHERE t.idempotency_key = k.key OFFSET 0) tr LOOP
        v_db_id[r.i] := r.id;
        v_simple := false;
        v_db_same[r.i] := r.same;
        v_db_fbal[r.i] := r.fbal;
        v_db_tbal[r.i] := r.tbal;
        v_db_amt[r.i] := r.amount;
    END LOOP;

    -- The first item of each key, for keys repeated inside the batch.
    SELECT array_agg(keys.first ORDER BY keys.i), v_simple AND bool_and(keys.first = keys.i) INTO v_first, v_simple
      FROM (SELECT k.i, min(k.i) OVER (PARTITION BY k.key) AS first
              FROM unnest(p_key) WITH ORDINALITY AS k(key, i)) keys;

    -- Every account of the batch, each once (those of items a committed key answers included:
    -- a lock more, never a lock out of order).
    v_need := p_union;
    IF cardinality(v_need) > 0 THEN
        -- The lock statement of lock_accounts(), written out and aggregated: every account once,
        -- ascending id (the sort is below the row-locking node), FOR NO KEY UPDATE.
        IF p_lock_mode = 2 THEN
            v_saved := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
        END IF;
        IF p_lock_mode = 1 THEN
            SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
                   array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
                   array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id),
                   array_agg(1e28 / power(10::numeric, l.scale) ORDER BY l.id),
                   array_agg(l.status ORDER BY l.id), array_agg(l.max_balance ORDER BY l.id)
              INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale, v_lim, v_st, v_max
              FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale, a.status, a.max_balance
                      FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                     WHERE a.id = ANY (v_need) ORDER BY a.id FOR NO KEY UPDATE OF a NOWAIT) l;
        ELSE
            SELECT array_agg(l.id ORDER BY l.id), array_agg(l.balance ORDER BY l.id), array_agg(l.held ORDER BY l.id),
                   array_agg(l.min_balance ORDER BY l.id), array_agg(l.version ORDER BY l.id),
                   array_agg(l.currency ORDER BY l.id), array_agg(l.scale ORDER BY l.id),
                   array_agg(1e28 / power(10::numeric, l.scale) ORDER BY l.id),
                   array_agg(l.status ORDER BY l.id), array_agg(l.max_balance ORDER BY l.id)
              INTO v_ids, v_bal, v_held, v_min, v_ver, v_cur, v_scale, v_lim, v_st, v_max
              FROM (SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale, a.status, a.max_balance
                      FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                     WHERE a.id = ANY (v_need) ORDER BY a.id FOR NO KEY UPDATE OF a) l;
        END IF;
        IF p_lock_mode = 2 THEN
            PERFORM set_config('lock_timeout', v_saved, true);
        END IF;
        v_touched := array_fill(false, ARRAY[coalesce(cardinality(v_ids), 0)]);
        -- Each item's accounts as positions in the locked arrays (NULL: no such account). When
        -- every id exists the caller's positions are those; otherwise map them with one merge of
        -- the two sorted lists.
        IF coalesce(cardinality(v_ids), 0) = cardinality(p_union) THEN
            v_fpos := p_fpos;
            v_tpos := p_tpos;
        ELSE
            v_map := array_fill(NULL::integer, ARRAY[cardinality(p_union)]);
            v_j := 1;
            FOR v_i IN 1 .. cardinality(p_union) LOOP
                IF v_j <= coalesce(cardinality(v_ids), 0) AND v_ids[v_j] = p_union[v_i] THEN
                    v_map[v_i] := v_j;
                    v_j := v_j + 1;
                END IF;
            END LOOP;
            v_fpos := array_fill(NULL::integer, ARRAY[n]);
            v_tpos := array_fill(NULL::integer, ARRAY[n]);
            FOR v_i IN 1 .. n LOOP
                v_fpos[v_i] := v_map[p_fpos[v_i]];
                v_tpos[v_i] := v_map[p_tpos[v_i]];
            END LOOP;
        END IF;
    END IF;

    -- The fast path, for the common batch: no key committed or repeated, and every item accepted.
    -- Then every item's balances follow from running sums per account (a window over the legs
    -- in item order), so the whole batch is decided by one statement instead of a plpgsql loop.
    -- Any item that would be refused (unknown account, currency, scale, floor, overflow) sends
    -- the batch to the loop below, which decides item by item; both give the same results when
    -- every item is accepted.
    v_seq := pg_get_serial_sequence('wallet_ledger.transfers', 'id')::regclass;
    IF v_simple AND v_ids IS NOT NULL THEN
        WITH items AS (
            SELECT u.i, u.fp, u.tp, round(u.amount, v_scale[u.fp]) AS amount,
                   v_cur[u.fp] = v_cur[u.tp] AND min_scale(u.amount) <= v_scale[u.fp]
                   AND v_st[u.fp] = 'open' AND v_st[u.tp] <> 'closed' AS valid
              FROM unnest(p_amount, v_fpos, v_tpos) WITH ORDINALITY AS u(amount, fp, tp, i)
             WHERE u.fp IS NOT NULL AND u.tp IS NOT NULL),
        legs AS (
            SELECT it.i, 0 AS side, it.fp AS pos, -it.amount AS delta FROM items it
            UNION ALL
            SELECT it.i, 1, it.tp, it.amount FROM items it),
        run AS (
            SELECT l.i, l.side, l.pos, l.delta,
                   v_bal[l.pos] + sum(l.delta) OVER w AS after,
                   v_ver[l.pos] + row_number() OVER w AS version,
                   v_held[l.pos] AS held, v_min[l.pos] AS floor, v_lim[l.pos] AS lim, v_max[l.pos] AS ceiling
              FROM legs l
            WINDOW w AS (PARTITION BY l.pos ORDER BY l.i, l.side ROWS UNBOUNDED PRECEDING)),
        last AS (
            SELECT DISTINCT ON (q.pos) q.pos, q.after, q.version FROM run q ORDER BY q.pos, q.i DESC, q.side DESC)
        SELECT (SELECT count(*) FROM items it WHERE it.valid) = n
               AND NOT EXISTS (SELECT 1 FROM run q
                                WHERE (q.side = 0 AND q.floor IS NOT NULL AND q.after - q.held < q.floor)
                                   OR (q.side = 1 AND q.ceiling IS NOT NULL AND q.after > q.ceiling)
                                   OR (abs(q.after) >= q.lim
                                       AND abs(q.after) * power(10::numeric, scale(q.after)) >= 1e28)),
               (SELECT array_agg(it.amount ORDER BY it.i) FROM items it),
               (SELECT array_agg(q.after ORDER BY q.i) FROM run q WHERE q.side = 0),
               (SELECT array_agg(q.after ORDER BY q.i) FROM run q WHERE q.side = 1),
               (SELECT array_agg(q.i ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(v_ids[q.pos] ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(q.delta ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(q.after ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(q.version ORDER BY q.i, q.side) FROM run q),
               (SELECT array_agg(v_ids[l.pos]) FROM last l),
               (SELECT array_agg(l.after) FROM last l),
               (SELECT array_agg(l.version) FROM last l)
          INTO v_ok, f_amount, f_from_bal, f_to_bal, f_item, e_acc, e_amt, e_bal, e_ver, a_id, a_bal, a_ver;
        IF v_ok THEN
            -- Ids in item order, drawn only now that every item is accepted.
            SELECT array_agg(nextval(v_seq) ORDER BY g) INTO v_tids FROM generate_series(1, n) g;
            INSERT INTO wallet_ledger.transfers (id, from_account, to_account, amount, idempotency_key, memo, metadata)
            OVERRIDING SYSTEM VALUE
            SELECT * FROM unnest(v_tids, p_from, p_to, f_amount, p_key, p_memo, p_metadata);
            INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
            SELECT v_tids[x.item], x.acc, x.amount, x.after, x.version
              FROM unnest(f_item, e_acc, e_amt, e_bal, e_ver) AS x(item, acc, amount, after, version);
            UPDATE wallet_ledger.accounts ac SET balance = x.after, version = x.version
              FROM unnest(a_id, a_bal, a_ver) AS x(id, after, version)
             WHERE ac.id = x.id;
            outcomes := array_fill('ok'::text, ARRAY[n]);
            amounts := f_amount;
            transfer_ids := v_tids;
            from_balances := f_from_bal;
            to_balances := f_to_bal;
            RETURN;
        END IF;
        e_acc := '{}'; e_amt := '{}'; e_bal := '{}'; e_ver := '{}';
    END IF;

    -- Transfer ids are drawn from the identity's sequence as items are accepted (in item order),
    -- so that later items can name earlier ones (replays and conflicts inside the batch).

    -- Decide every item, in order, in memory.
    FOR v_i IN 1 .. n LOOP
        IF v_db_id[v_i] IS NOT NULL THEN
            transfer_ids[v_i] := v_db_id[v_i];
            IF v_db_same[v_i] THEN
                outcomes[v_i] := 'replayed';
                amounts[v_i] := v_db_amt[v_i];
                from_balances[v_i] := v_db_fbal[v_i];
                to_balances[v_i] := v_db_tbal[v_i];
            ELSE
                outcomes[v_i] := 'idempotency_conflict';
            END IF;
            CONTINUE;
        END IF;
        v_j := v_holder[v_first[v_i]];
        IF v_j IS NOT NULL THEN
            transfer_ids[v_i] := transfer_ids[v_j];
            IF p_from[v_j] = p_from[v_i] AND p_to[v_j] = p_to[v_i] AND p_amount[v_j] = p_amount[v_i]
               AND p_up_to[v_j] = p_up_to[v_i] AND p_memo[v_j] IS NOT DISTINCT FROM p_memo[v_i]
               AND coalesce(p_metadata[v_j], '{}') = coalesce(p_metadata[v_i], '{}') THEN
                outcomes[v_i] := 'replayed';
                amounts[v_i] := amounts[v_j];
                from_balances[v_i] := from_balances[v_j];
                to_balances[v_i] := to_balances[v_j];
            ELSE
                outcomes[v_i] := 'idempotency_conflict';
            END IF;
            CONTINUE;
        END IF;
        v_f := v_fpos[v_i];
        v_t := v_tpos[v_i];
        IF v_f IS NULL THEN
            outcomes[v_i] := 'account_not_found'; accounts[v_i] := p_from[v_i]; CONTINUE;
        END IF;
        IF v_t IS NULL THEN
            outcomes[v_i] := 'account_not_found'; accounts[v_i] := p_to[v_i]; CONTINUE;
        END IF;
        IF v_st[v_f] <> 'open' THEN
            outcomes[v_i] := CASE WHEN v_st[v_f] = 'frozen' THEN 'account_frozen' ELSE 'account_closed' END;
            accounts[v_i] := p_from[v_i]; CONTINUE;
        END IF;
        IF v_st[v_t] = 'closed' THEN
            outcomes[v_i] := 'account_closed'; accounts[v_i] := p_to[v_i]; CONTINUE;
        END IF;
        from_currencies[v_i] := v_cur[v_f];
        to_currencies[v_i] := v_cur[v_t];
        currency_scales[v_i] := v_scale[v_f];
        IF v_cur[v_f] <> v_cur[v_t] THEN
            outcomes[v_i] := 'currency_mismatch'; CONTINUE;
        END IF;
        IF min_scale(p_amount[v_i]) > v_scale[v_f] THEN
            outcomes[v_i] := 'invalid_scale'; CONTINUE;
        END IF;
        v_amount := round(p_amount[v_i], v_scale[v_f]);
        IF p_up_to[v_i] AND v_min[v_f] IS NOT NULL AND v_bal[v_f] - v_held[v_f] - v_amount < v_min[v_f]
           AND v_bal[v_f] - v_held[v_f] - v_min[v_f] > 0 THEN
            v_amount := v_bal[v_f] - v_held[v_f] - v_min[v_f]; -- a sweep: all that is available
        END IF;
        IF v_min[v_f] IS NOT NULL AND v_bal[v_f] - v_held[v_f] - v_amount < v_min[v_f] THEN
            outcomes[v_i] := 'insufficient_funds'; accounts[v_i] := p_from[v_i];
            availables[v_i] := v_bal[v_f] - v_held[v_f] - v_min[v_f];
            CONTINUE;
        END IF;
        IF v_max[v_t] IS NOT NULL AND v_bal[v_t] + v_amount > v_max[v_t] THEN
            outcomes[v_i] := 'balance_limit_exceeded'; accounts[v_i] := p_to[v_i];
            availables[v_i] := v_max[v_t]; -- the ceiling
            CONTINUE;
        END IF;

        -- The accounts_balance_magnitude CHECK, judged here per item so that one item too large
        -- is refused alone (a balance's scale never exceeds its currency's, so below v_lim
        -- the exact test cannot fail).
        IF (abs(v_bal[v_f] - v_amount) >= v_lim[v_f]
            AND abs(v_bal[v_f] - v_amount) * power(10::numeric, scale(v_bal[v_f] - v_amount)) >= 1e28)
           OR (abs(v_bal[v_t] + v_amount) >= v_lim[v_t]
            AND abs(v_bal[v_t] + v_amount) * power(10::numeric, scale(v_bal[v_t] + v_amount)) >= 1e28) THEN
            outcomes[v_i] := 'overflow'; CONTINUE;
        END IF;

        -- Accepted: move the money in memory and record what to write.
        v_accepted := v_accepted + 1;
        outcomes[v_i] := 'ok';
        amounts[v_i] := v_amount;
        transfer_ids[v_i] := nextval(v_seq);
        v_holder[v_first[v_i]] := v_i;
        v_bal[v_f] := v_bal[v_f] - v_amount;
        v_ver[v_f] := v_ver[v_f] + 1;
        v_bal[v_t] := v_bal[v_t] + v_amount;
        v_ver[v_t] := v_ver[v_t] + 1;
        v_touched[v_f] := true;
        v_touched[v_t] := true;
        from_balances[v_i] := v_bal[v_f];
        to_balances[v_i] := v_bal[v_t];
        w_id[v_accepted] := transfer_ids[v_i];
        w_from[v_accepted] := p_from[v_i];
        w_to[v_accepted] := p_to[v_i];
        w_amount[v_accepted] := v_amount;
        w_key[v_accepted] := p_key[v_i];
        w_memo[v_accepted] := p_memo[v_i];
        w_meta[v_accepted] := p_metadata[v_i];
        e_tid[2 * v_accepted - 1] := transfer_ids[v_i];
        e_acc[2 * v_accepted - 1] := p_from[v_i];
        e_amt[2 * v_accepted - 1] := -v_amount;
        e_bal[2 * v_accepted - 1] := v_bal[v_f];
        e_ver[2 * v_accepted - 1] := v_ver[v_f];
        e_tid[2 * v_accepted] := transfer_ids[v_i];
        e_acc[2 * v_accepted] := p_to[v_i];
        e_amt[2 * v_accepted] := v_amount;
        e_bal[2 * v_accepted] := v_bal[v_t];
        e_ver[2 * v_accepted] := v_ver[v_t];
    END LOOP;

    IF v_accepted = 0 THEN
        RETURN;
    END IF;

    -- Apply, set-based: every row written here is locked by this transaction.
    INSERT INTO wallet_ledger.transfers (id, from_account, to_account, amount, idempotency_key, memo, metadata)
    OVERRIDING SYSTEM VALUE
    SELECT * FROM unnest(w_id, w_from, w_to, w_amount, w_key, w_memo, w_meta);

    INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
    SELECT * FROM unnest(e_tid, e_acc, e_amt, e_bal, e_ver);

    UPDATE wallet_ledger.accounts a SET balance = u.balance, version = u.version
      FROM unnest(v_ids, v_bal, v_ver, v_touched) AS u(id, balance, version, touched)
     WHERE a.id = u.id AND u.touched;
END
$fn$;
    $sql$;
    -- reversal_by_key: migration 7's function; a replay needs the same metadata too.
    EXECUTE $sql$
CREATE FUNCTION wallet_ledger.reversal_by_key(
    p_key text, p_transfer bigint, p_amount numeric, p_memo text, p_metadata jsonb,
    OUT outcome text, OUT transfer_id bigint, OUT amount numeric, OUT from_account bigint,
    OUT to_account bigint, OUT from_balance numeric, OUT to_balance numeric)
RETURNS SETOF record
LANGUAGE sql STABLE AS $fn$
    SELECT CASE WHEN t.reverses IS NOT DISTINCT FROM p_transfer AND (p_amount IS NULL OR t.amount = p_amount)
                     AND t.memo IS NOT DISTINCT FROM p_memo
                     AND coalesce(t.metadata::jsonb, '{}') = coalesce(p_metadata, '{}') THEN 'replayed' ELSE 'idempotency_conflict' END,
           t.id, t.amount, l.from_account, l.to_account, l.from_balance, l.to_balance
      FROM wallet_ledger.transfers t, wallet_ledger.transfer_legs(t.id) l
     WHERE t.idempotency_key = p_key
$fn$;
    $sql$;
    -- reverse: migration 7's function; the reversal's own metadata goes to transfer() or post().
    EXECUTE $sql$
CREATE FUNCTION wallet_ledger.reverse(
    p_transfer bigint, p_amount numeric, p_key text, p_memo text, p_lock_mode smallint, p_lock_timeout_ms integer,
    p_metadata jsonb,
    OUT outcome text, OUT transfer_id bigint, OUT from_account bigint, OUT to_account bigint,
    OUT amount numeric, OUT from_balance numeric, OUT to_balance numeric, OUT account bigint,
    OUT available numeric, OUT currency_scale smallint)
LANGUAGE plpgsql AS $fn$
DECLARE
    o       wallet_ledger.transfers%ROWTYPE;
    r       record;
    v_rest  numeric;
    v_saved text;
    v_ids   bigint[];
    v_amts  numeric[];
    v_amount numeric;
BEGIN
    -- Idempotency: a committed key answers before any lock is taken.
    SELECT * INTO r FROM wallet_ledger.reversal_by_key(p_key, p_transfer, p_amount, p_memo, p_metadata);
    IF r.outcome IS NOT NULL THEN
        outcome := r.outcome; transfer_id := r.transfer_id; amount := r.amount;
        from_account := r.from_account; to_account := r.to_account;
        from_balance := r.from_balance; to_balance := r.to_balance;
        RETURN;
    END IF;

    IF p_lock_mode = 1 THEN
        SELECT * INTO o FROM wallet_ledger.transfers t WHERE t.id = p_transfer FOR NO KEY UPDATE NOWAIT;
    ELSE
        IF p_lock_mode = 2 THEN
            v_saved := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
        END IF;
        SELECT * INTO o FROM wallet_ledger.transfers t WHERE t.id = p_transfer FOR NO KEY UPDATE;
        IF p_lock_mode = 2 THEN
            PERFORM set_config('lock_timeout', v_saved, true);
        END IF;
    END IF;
    IF o.id IS NULL THEN
        outcome := 'transfer_not_found'; RETURN;
    END IF;
    v_rest := o.amount - o.reversed;
    v_amount := coalesce(p_amount, v_rest);
    amount := v_amount;
    IF v_rest = 0 OR v_amount > v_rest THEN
        outcome := 'reversal_exceeds_original'; available := v_rest; RETURN;
    END IF;

    IF o.from_account IS NOT NULL THEN
        SELECT * INTO r FROM wallet_ledger.transfer(o.to_account, o.from_account, v_amount, p_key, p_memo,
                                                   p_lock_mode, p_lock_timeout_ms, p_metadata);
    ELSE
        SELECT array_agg(e.account_id ORDER BY e.id), array_agg(e.amount ORDER BY e.id) INTO v_ids, v_amts
          FROM wallet_ledger.entries e WHERE e.transfer_id = o.id;
        IF v_amount <> o.amount THEN
            IF cardinality(v_ids) > 2 THEN
                outcome := 'partial_posting'; RETURN;
            END IF;
            v_amts := ARRAY[sign(v_amts[1]) * v_amount, sign(v_amts[2]) * v_amount];
        END IF;
        SELECT * INTO r FROM wallet_ledger.post(v_ids, ARRAY(SELECT -x FROM unnest(v_amts) x), p_key, p_memo,
                                               p_lock_mode, p_lock_timeout_ms, p_metadata);
    END IF;
    IF r.outcome IN ('replayed', 'idempotency_conflict') THEN
        -- The key was committed after the check above, by a call that had the original's lock
        -- first (or by another operation): answer as that check now does.
        SELECT * INTO r FROM wallet_ledger.reversal_by_key(p_key, p_transfer, p_amount, p_memo, p_metadata);
        outcome := r.outcome; transfer_id := r.transfer_id; amount := r.amount;
        from_account := r.from_account; to_account := r.to_account;
        from_balance := r.from_balance; to_balance := r.to_balance;
        RETURN;
    END IF;
    outcome := r.outcome; account := r.account; available := r.available; currency_scale := r.currency_scale;
    IF r.outcome <> 'ok' THEN
        RETURN;
    END IF;
    transfer_id := r.transfer_id;
    UPDATE wallet_ledger.transfers t SET reverses = o.id WHERE t.id = r.transfer_id;
    UPDATE wallet_ledger.transfers t SET reversed = t.reversed + v_amount WHERE t.id = o.id;
    SELECT * INTO r FROM wallet_ledger.transfer_legs(transfer_id);
    from_account := r.from_account; to_account := r.to_account;
    from_balance := r.from_balance; to_balance := r.to_balance;
END
$fn$;
    $sql$;
    -- transfer_up_to: migration 7's function, with metadata (given to transfer()).
    EXECUTE $sql$
CREATE FUNCTION wallet_ledger.transfer_up_to(
    p_from bigint, p_to bigint, p_amount numeric, p_key text, p_memo text,
    p_lock_mode smallint, p_lock_timeout_ms integer, p_metadata jsonb,
    OUT outcome text, OUT transfer_id bigint, OUT from_balance numeric, OUT to_balance numeric,
    OUT account bigint, OUT available numeric, OUT from_currency text, OUT to_currency text,
    OUT currency_scale smallint, OUT lock_wait_us bigint, OUT amount numeric)
LANGUAGE plpgsql AS $fn$
DECLARE
    r      record;
    v_prev wallet_ledger.transfers%ROWTYPE;
    v_lock_start timestamptz;
BEGIN
    SELECT * INTO v_prev FROM wallet_ledger.transfers t WHERE t.idempotency_key = p_key;
    IF FOUND THEN
        transfer_id := v_prev.id;
        IF v_prev.from_account = p_from AND v_prev.to_account = p_to AND v_prev.amount <= p_amount
           AND v_prev.reverses IS NULL AND v_prev.memo IS NOT DISTINCT FROM p_memo
           AND coalesce(v_prev.metadata::jsonb, '{}') = coalesce(p_metadata, '{}') THEN
            outcome := 'replayed';
            amount := v_prev.amount;
            SELECT l.from_balance, l.to_balance INTO from_balance, to_balance
              FROM wallet_ledger.transfer_legs(v_prev.id) l;
        ELSE
            outcome := 'idempotency_conflict';
        END IF;
        RETURN;
    END IF;

    amount := p_amount;
    v_lock_start := clock_timestamp();
    FOR r IN SELECT * FROM wallet_ledger.lock_accounts(ARRAY[p_from, p_to], p_lock_mode, p_lock_timeout_ms) LOOP
        IF r.id = p_from AND r.min_balance IS NOT NULL AND min_scale(p_amount) <= r.scale
           AND r.balance - r.held - r.min_balance < p_amount AND r.balance - r.held - r.min_balance > 0 THEN
            amount := r.balance - r.held - r.min_balance;
        END IF;
    END LOOP;
    lock_wait_us := (extract(epoch FROM clock_timestamp() - v_lock_start) * 1000000)::bigint;
    SELECT * INTO r FROM wallet_ledger.transfer(p_from, p_to, amount, p_key, p_memo, p_lock_mode, p_lock_timeout_ms,
                                                   p_metadata);
    outcome := r.outcome; transfer_id := r.transfer_id; from_balance := r.from_balance;
    to_balance := r.to_balance; account := r.account; available := r.available;
    from_currency := r.from_currency; to_currency := r.to_currency; currency_scale := r.currency_scale;
    IF outcome <> 'ok' THEN
        amount := NULL;
    END IF;
END
$fn$;
    $sql$;
    -- Migration 6's settings for the functions of array parameters, again (CREATE OR REPLACE
    -- resets them, and two are new).
    ALTER FUNCTION wallet_ledger.transfer_batch(bigint[], bigint[], numeric[], text[], text[], smallint, integer,
                                                bigint[], integer[], integer[], boolean[], jsonb[])
        SET plan_cache_mode = force_generic_plan
        SET enable_seqscan = off;
    ALTER FUNCTION wallet_ledger.post(bigint[], numeric[], text, text, smallint, integer)
        SET plan_cache_mode = force_generic_plan
        SET enable_seqscan = off;
    ALTER FUNCTION wallet_ledger.post(bigint[], numeric[], text, text, smallint, integer, jsonb)
        SET plan_cache_mode = force_generic_plan
        SET enable_seqscan = off;
END
$do$;

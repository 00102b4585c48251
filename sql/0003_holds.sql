-- Migration 3: holds (two-phase transfers): authorize, then capture (in full or in part),
-- void, or let expire. A pending hold reserves its amount on the source account
-- (accounts.held), so the account's available balance (balance - held) keeps the floor.
--
-- Lock order: capture and void lock their hold row first, then the accounts through
-- lock_accounts (ascending id). Nothing locks an account and then waits for a hold, so no
-- cycle. Expiry workers never wait at all (SKIP LOCKED on holds and accounts alike).

CREATE TABLE wallet_ledger.holds (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_account    bigint      NOT NULL REFERENCES wallet_ledger.accounts (id),
    to_account      bigint      NOT NULL REFERENCES wallet_ledger.accounts (id),
    amount          numeric     NOT NULL CHECK (amount > 0),
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'captured', 'voided', 'expired')),
    expires_at      timestamptz NOT NULL,
    captured        numeric     NULL CHECK (captured IS NULL OR (captured > 0 AND captured <= amount)),
    transfer_id     bigint      NULL REFERENCES wallet_ledger.transfers (id),
    idempotency_key text        NULL CONSTRAINT holds_idempotency_key UNIQUE,
    memo            text        NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz NULL,
    CONSTRAINT holds_distinct_accounts CHECK (from_account <> to_account),
    CONSTRAINT holds_ended CHECK ((state = 'pending') = (ended_at IS NULL)),
    CONSTRAINT holds_capture CHECK ((state = 'captured') = (transfer_id IS NOT NULL AND captured IS NOT NULL))
);

-- the expiry queue, in the order workers claim it
CREATE INDEX holds_expiry ON wallet_ledger.holds (expires_at, id) WHERE state = 'pending';
-- open holds of an account (listing, audit)
CREATE INDEX holds_open_by_account ON wallet_ledger.holds (from_account) WHERE state = 'pending';

-- the hold history: one row per state change
CREATE TABLE wallet_ledger.hold_events (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hold_id bigint      NOT NULL REFERENCES wallet_ledger.holds (id),
    event   text        NOT NULL CHECK (event IN ('created', 'captured', 'voided', 'expired')),
    amount  numeric     NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX hold_events_hold ON wallet_ledger.hold_events (hold_id);

-- hold: reserves p_amount on p_from for p_to, for p_expires_in_ms from the moment it is made
-- (clock_timestamp(), not the transaction's start: a caller's transaction may be long).
-- Outcomes: ok, replayed, idempotency_conflict, account_not_found (account), currency_mismatch,
-- invalid_scale (currency_scale), insufficient_funds (account, available).
CREATE FUNCTION wallet_ledger.hold(
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
BEGIN
    IF p_key IS NOT NULL THEN
        SELECT * INTO v_prev FROM wallet_ledger.holds h WHERE h.idempotency_key = p_key;
        IF FOUND THEN
            hold_id := v_prev.id;
            expires_at := v_prev.expires_at;
            IF v_prev.from_account = p_from AND v_prev.to_account = p_to
               AND v_prev.amount = p_amount AND v_prev.memo IS NOT DISTINCT FROM p_memo THEN
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

-- lock_hold: locks one hold row (first in the lock order), honouring the lock wait policy.
CREATE FUNCTION wallet_ledger.lock_hold(p_hold_id bigint, p_lock_mode smallint, p_lock_timeout_ms integer)
RETURNS SETOF wallet_ledger.holds
LANGUAGE plpgsql AS $fn$
DECLARE
    v_saved text;
BEGIN
    IF p_lock_mode = 1 THEN
        RETURN QUERY SELECT * FROM wallet_ledger.holds WHERE id = p_hold_id FOR UPDATE NOWAIT;
        RETURN;
    END IF;
    IF p_lock_mode = 2 THEN
        v_saved := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    END IF;
    RETURN QUERY SELECT * FROM wallet_ledger.holds WHERE id = p_hold_id FOR UPDATE;
    IF p_lock_mode = 2 THEN
        PERFORM set_config('lock_timeout', v_saved, true);
    END IF;
END
$fn$;

-- capture: moves p_amount (NULL = the whole hold; at most the held amount) from the hold's
-- source to its destination, releases the whole reservation, and ends the hold.
-- Outcomes: ok, hold_not_found, hold_not_pending (state; transfer_id and balances when it was
-- captured, so a retried capture can recognise its own earlier success), exceeds_hold
-- (held amount in available), invalid_scale (currency_scale).
CREATE FUNCTION wallet_ledger.capture(
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

    UPDATE wallet_ledger.accounts a
       SET held = a.held - h.amount, balance = a.balance - v_amount, version = a.version + 1
     WHERE a.id = h.from_account RETURNING a.balance, a.version INTO from_balance, v_from_version;
    UPDATE wallet_ledger.accounts a SET balance = a.balance + v_amount, version = a.version + 1
     WHERE a.id = h.to_account RETURNING a.balance, a.version INTO to_balance, v_to_version;
    INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, memo)
    VALUES (h.from_account, h.to_account, v_amount, h.memo) RETURNING id INTO v_transfer;
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

-- void: releases a pending hold without moving money.
-- Outcomes: ok, hold_not_found, hold_not_pending (state).
CREATE FUNCTION wallet_ledger.void(
    p_hold_id bigint, p_lock_mode smallint, p_lock_timeout_ms integer,
    OUT outcome text, OUT state text)
LANGUAGE plpgsql AS $fn$
DECLARE
    h wallet_ledger.holds%ROWTYPE;
BEGIN
    SELECT * INTO h FROM wallet_ledger.lock_hold(p_hold_id, p_lock_mode, p_lock_timeout_ms);
    IF NOT FOUND THEN
        outcome := 'hold_not_found'; RETURN;
    END IF;
    state := CASE WHEN h.state = 'pending' AND h.expires_at <= clock_timestamp() THEN 'expired' ELSE h.state END;
    IF state <> 'pending' THEN
        outcome := 'hold_not_pending'; RETURN;
    END IF;
    PERFORM 1 FROM wallet_ledger.lock_accounts(ARRAY[h.from_account], p_lock_mode, p_lock_timeout_ms);
    UPDATE wallet_ledger.accounts a SET held = a.held - h.amount WHERE a.id = h.from_account;
    UPDATE wallet_ledger.holds hh SET state = 'voided', ended_at = now() WHERE hh.id = h.id;
    INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES (h.id, 'voided', h.amount);
    state := 'voided';
    outcome := 'ok';
END
$fn$;

-- expire_holds: claims up to p_limit lapsed pending holds, oldest expiry first, together with
-- their source accounts, in ONE statement with SKIP LOCKED: a hold another worker (or a
-- capture/void) has locked, or whose source account a transfer or another worker holds right
-- now, is skipped and left for a later pass. So a worker never waits for anything: workers
-- drain disjoint holds without queueing behind each other's commits, never claim a hold twice,
-- and, since a transaction that never waits cannot be part of a wait cycle, cannot deadlock
-- even though this statement's locks are not taken in ascending account order (the one place
-- the ledger departs from it, and it can because it never waits). The claimed rows are then
-- updated; every one of them is already locked by this transaction. Returns how many expired.
CREATE FUNCTION wallet_ledger.expire_holds(p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids bigint[];
BEGIN
    SELECT array_agg(c.id) INTO v_ids
      FROM (SELECT h.id FROM wallet_ledger.holds h
              JOIN wallet_ledger.accounts a ON a.id = h.from_account
             WHERE h.state = 'pending' AND h.expires_at <= clock_timestamp()
             ORDER BY h.expires_at, h.id LIMIT p_limit
               FOR UPDATE OF h SKIP LOCKED
               FOR NO KEY UPDATE OF a SKIP LOCKED) c;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE wallet_ledger.accounts a SET held = a.held - s.total
      FROM (SELECT h.from_account, sum(h.amount) AS total FROM wallet_ledger.holds h
             WHERE h.id = ANY (v_ids) GROUP BY h.from_account) s
     WHERE a.id = s.from_account;
    UPDATE wallet_ledger.holds hh SET state = 'expired', ended_at = clock_timestamp() WHERE hh.id = ANY (v_ids);
    INSERT INTO wallet_ledger.hold_events (hold_id, event, amount)
    SELECT h.id, 'expired', h.amount FROM wallet_ledger.holds h WHERE h.id = ANY (v_ids);
    RETURN cardinality(v_ids);
END
$fn$;

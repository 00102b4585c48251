-- Citus step 1: distribute the core schema over the cluster and replace the functions whose
-- statements Citus cannot run as written. Applied after the core migrations, in Citus mode only
-- (src/citus.rs); the core migrations are never changed or renumbered for it. docs/citus.md
-- explains every choice.
--
-- Placement:
--   currencies                    reference table (a copy on every node)
--   accounts                      distributed by id
--   transfers                     distributed by from_account, co-located with accounts
--   entries                       distributed by account_id, co-located with accounts
--   transfer_keys (new)           caller idempotency keys, distributed by key
--   holds                         distributed by id (capture and void find a hold by id alone)
--   hold_events                   distributed by hold_id, co-located with holds
--   hold_keys (new)               hold idempotency keys, distributed by key
--
-- A unique index on a distributed table must contain its distribution column, so a key can be
-- unique across the cluster only in a table distributed by the key itself: transfer_keys and
-- hold_keys. Keys the library makes for keyless calls ('~' + uuid v7, unique by construction)
-- are only ever looked up again by the retry of the same call, with the same from account, so
-- they stay in transfers, unique per (from_account, idempotency_key), on the from account's
-- shard: a keyless transfer between two accounts of one shard touches one shard only.
--
-- Foreign keys between distributed tables must join on the distribution columns of co-located
-- tables: transfers.from_account and entries.account_id keep theirs; the others
-- (transfers.to_account, entries.transfer_id, holds -> accounts/transfers) are dropped, and the
-- audit checks what they guaranteed (every transfer has its two legs on existing accounts).

-- One connection per node for the whole migration: Citus needs it to add foreign keys to a
-- reference table in the transaction that distributed the tables.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- Every foreign key goes first (Citus turns a local table chained to a reference table by a
-- foreign key into a "citus local table", which cannot then be distributed); the ones between
-- co-located tables, or to the reference table, come back once everything is distributed.
ALTER TABLE wallet_ledger.accounts DROP CONSTRAINT accounts_currency_fkey;
ALTER TABLE wallet_ledger.entries DROP CONSTRAINT entries_transfer_id_fkey,
                                  DROP CONSTRAINT entries_account_id_fkey;
ALTER TABLE wallet_ledger.hold_events DROP CONSTRAINT hold_events_hold_id_fkey,
                                      DROP CONSTRAINT hold_events_pkey,
                                      ADD CONSTRAINT hold_events_pkey PRIMARY KEY (hold_id, id);
ALTER TABLE wallet_ledger.holds DROP CONSTRAINT holds_transfer_id_fkey,
                                DROP CONSTRAINT holds_from_account_fkey,
                                DROP CONSTRAINT holds_to_account_fkey,
                                DROP CONSTRAINT holds_idempotency_key;
ALTER TABLE wallet_ledger.transfers DROP CONSTRAINT transfers_from_account_fkey,
                                    DROP CONSTRAINT transfers_to_account_fkey,
                                    DROP CONSTRAINT transfers_idempotency_key,
                                    DROP CONSTRAINT transfers_pkey;
ALTER TABLE wallet_ledger.transfers ADD CONSTRAINT transfers_pkey PRIMARY KEY (from_account, id),
                                    ADD CONSTRAINT transfers_idempotency_key UNIQUE (from_account, idempotency_key);
ALTER TABLE wallet_ledger.entries DROP CONSTRAINT entries_pkey,
                                  ADD CONSTRAINT entries_pkey PRIMARY KEY (account_id, id);
-- a transfer found by id alone (an account's history, where it was the credited side)
CREATE INDEX transfers_id ON wallet_ledger.transfers (id);

CREATE TABLE wallet_ledger.transfer_keys (
    key          text    PRIMARY KEY,
    from_account bigint  NOT NULL,
    to_account   bigint  NOT NULL,
    amount       numeric NOT NULL,
    memo         text    NULL,
    transfer_id  bigint  NULL -- set in the transaction that claimed the key
);

CREATE TABLE wallet_ledger.hold_keys (
    key          text        PRIMARY KEY,
    from_account bigint      NOT NULL,
    to_account   bigint      NOT NULL,
    amount       numeric     NOT NULL,
    memo         text        NULL,
    hold_id      bigint      NULL,
    expires_at   timestamptz NULL
);

SELECT create_reference_table('wallet_ledger.currencies');
SELECT create_distributed_table('wallet_ledger.accounts', 'id');
SELECT create_distributed_table('wallet_ledger.transfers', 'from_account', colocate_with => 'wallet_ledger.accounts');
SELECT create_distributed_table('wallet_ledger.entries', 'account_id', colocate_with => 'wallet_ledger.accounts');
SELECT create_distributed_table('wallet_ledger.holds', 'id', colocate_with => 'none');
SELECT create_distributed_table('wallet_ledger.hold_events', 'hold_id', colocate_with => 'wallet_ledger.holds');
SELECT create_distributed_table('wallet_ledger.transfer_keys', 'key');
SELECT create_distributed_table('wallet_ledger.hold_keys', 'key', colocate_with => 'wallet_ledger.transfer_keys');

ALTER TABLE wallet_ledger.accounts ADD CONSTRAINT accounts_currency_fkey
    FOREIGN KEY (currency) REFERENCES wallet_ledger.currencies (code);
ALTER TABLE wallet_ledger.transfers ADD CONSTRAINT transfers_from_account_fkey
    FOREIGN KEY (from_account) REFERENCES wallet_ledger.accounts (id);
ALTER TABLE wallet_ledger.entries ADD CONSTRAINT entries_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES wallet_ledger.accounts (id);
ALTER TABLE wallet_ledger.hold_events ADD CONSTRAINT hold_events_hold_id_fkey
    FOREIGN KEY (hold_id) REFERENCES wallet_ledger.holds (id);

-- lock_accounts, Citus form: one single-shard `WHERE id = $1 FOR NO KEY UPDATE` per account, in
-- ascending id order (Citus refuses `id = ANY(...) ORDER BY id FOR UPDATE` across shards). The
-- ascending order is what keeps cross-shard waits free of cycles, exactly as on one server.
-- Lock mode 2 (lock_timeout) is refused: the wait happens on a worker, where the coordinator's
-- lock_timeout does not apply (the library refuses LockWait::Timeout in Citus mode at build).
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
                SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = v_id FOR NO KEY UPDATE OF a NOWAIT;
        ELSE
            RETURN QUERY
                SELECT a.id, a.currency, a.balance, a.held, a.min_balance, a.version, c.scale
                  FROM wallet_ledger.accounts a JOIN wallet_ledger.currencies c ON c.code = a.currency
                 WHERE a.id = v_id FOR NO KEY UPDATE OF a;
        END IF;
    END LOOP;
END
$fn$;

-- The writers' gate: every function that changes balances takes this coordinator-local
-- advisory lock in shared mode as its first step (before any row lock), and verify() takes it
-- in exclusive mode before reading. Citus has no global snapshot, so an audit reading while a
-- two-phase transfer commits could see its debit on one worker and not its credit on the other;
-- with the gate, the audit starts only when no writer is between its first statement and the
-- end of its commit on every worker (the coordinator releases the lock after COMMIT PREPARED),
-- and writers wait while the audit reads. The key is "wallet_a" in ASCII.
CREATE OR REPLACE FUNCTION wallet_ledger.writer_gate() RETURNS void
LANGUAGE sql AS $fn$ SELECT pg_advisory_xact_lock_shared(8602275976068751201) $fn$;

-- lock_hold, Citus form: the gate, then the hold row (single shard: holds are distributed by id).
CREATE OR REPLACE FUNCTION wallet_ledger.lock_hold(p_hold_id bigint, p_lock_mode smallint, p_lock_timeout_ms integer)
RETURNS SETOF wallet_ledger.holds
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM wallet_ledger.writer_gate();
    IF p_lock_mode = 2 THEN
        RAISE EXCEPTION 'wallet-ledger on Citus: lock_timeout is not supported, use block or nowait'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF p_lock_mode = 1 THEN
        RETURN QUERY SELECT * FROM wallet_ledger.holds WHERE id = p_hold_id FOR UPDATE NOWAIT;
    ELSE
        RETURN QUERY SELECT * FROM wallet_ledger.holds WHERE id = p_hold_id FOR UPDATE;
    END IF;
END
$fn$;

-- transfer, Citus form. Same parameters and outcomes as the core function (sql/0002_transfer.sql).
-- Every statement names its rows by distribution column, so each runs on one shard; a transfer
-- whose two accounts (and, for a caller key, the key) live on one worker commits there in one
-- phase, otherwise Citus commits it on both workers with two-phase commit.
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

-- hold, Citus form: the gate, the key claimed in hold_keys (holds are distributed by id, so a
-- key can only be found again, and be unique, through the key table), then the core steps.
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

-- expire_holds, Citus form. The core claims holds and their accounts in one statement with
-- SKIP LOCKED, which Citus cannot run across shards; here the candidates are read without
-- locks (oldest expiry first), then each hold and its source account is claimed with its own
-- single-shard `FOR UPDATE SKIP LOCKED`. A worker still never waits, so it still cannot be part
-- of a wait cycle; a hold or account someone else holds right now is left for a later pass.
CREATE OR REPLACE FUNCTION wallet_ledger.expire_holds(p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    c record;
    h wallet_ledger.holds%ROWTYPE;
    v_account bigint;
    v_now timestamptz;
    n integer := 0;
BEGIN
    PERFORM wallet_ledger.writer_gate();
    FOR c IN SELECT hh.id FROM wallet_ledger.holds hh
              WHERE hh.state = 'pending' AND hh.expires_at <= clock_timestamp()
              ORDER BY hh.expires_at, hh.id LIMIT p_limit LOOP
        SELECT * INTO h FROM wallet_ledger.holds hh WHERE hh.id = c.id FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND OR h.state <> 'pending';
        SELECT a.id INTO v_account FROM wallet_ledger.accounts a WHERE a.id = h.from_account
           FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        UPDATE wallet_ledger.accounts a SET held = a.held - h.amount WHERE a.id = h.from_account;
        v_now := clock_timestamp(); -- Citus sends no volatile function to a shard
        UPDATE wallet_ledger.holds hh SET state = 'expired', ended_at = v_now WHERE hh.id = h.id;
        INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES (h.id, 'expired', h.amount);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$fn$;

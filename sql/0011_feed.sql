-- The change feed (issue 18): every committed movement and account or hold change, once, in
-- one order, gap-free. docs/design.md ("The change feed") gives the argument; the rules it
-- rests on are stated where they are kept.
--
-- Positions. A change's position is drawn from the transfers' id sequence: a transfer's is its
-- id (drawn by every ledger function after the transfer's account locks, in the order its
-- versions are written), an account or hold change's is drawn by the triggers below when its
-- row is written, under that row's lock. So positions follow each account's version order, and
-- a transfer costs nothing more than before. Rule: every position is drawn after its
-- transaction has an xid (a row lock or a write comes first); the feed's horizon depends on it.
-- The sequence hands out values one at a time (CACHE 1, set below), so its last value bounds
-- every position already drawn by any session.

-- Account and hold changes: one row each, with the account's state after it.
CREATE TABLE wallet_ledger.feed_events (
    position    bigint      PRIMARY KEY DEFAULT nextval('wallet_ledger.transfers_id_seq'),
    kind        text        NOT NULL CONSTRAINT feed_events_kind CHECK (kind IN (
                    'account_opened', 'status_changed', 'limits_changed',
                    'hold_placed', 'hold_voided', 'hold_expired')),
    account_id  bigint      NOT NULL,
    hold_id     bigint      NULL,
    amount      numeric     NULL,
    balance     numeric     NOT NULL,
    version     bigint      NOT NULL,
    status      text        NOT NULL,
    min_balance numeric     NULL,
    max_balance numeric     NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT feed_events_hold CHECK ((kind LIKE 'hold_%') = (hold_id IS NOT NULL AND amount IS NOT NULL))
);

-- The feed's horizon: every position at or below it is final (its transaction committed or
-- rolled back). It only grows.
CREATE TABLE wallet_ledger.feed_state (
    one     boolean PRIMARY KEY DEFAULT true CONSTRAINT feed_state_one CHECK (one),
    horizon bigint  NOT NULL DEFAULT 0 CONSTRAINT feed_state_horizon CHECK (horizon >= 0)
);
INSERT INTO wallet_ledger.feed_state DEFAULT VALUES;

-- Marks: (the last position drawn when the mark was taken, the transactions of this database
-- that were open just after). Every transaction that drew a position up to the mark had its
-- xid before the mark was read, so it had ended or was among them. A mark is stable once none
-- of them is still open; every position up to it is then final.
CREATE TABLE wallet_ledger.feed_marks (
    mark bigint   NOT NULL,
    xids bigint[] NOT NULL
);
-- Durable consumers: each one's position, advanced in the transaction of the handler that
-- processed the changes up to it.
CREATE TABLE wallet_ledger.feed_consumers (
    name       text        PRIMARY KEY
                           CONSTRAINT feed_consumers_name CHECK (octet_length(name) BETWEEN 1 AND 200),
    position   bigint      NOT NULL DEFAULT 0 CONSTRAINT feed_consumers_position CHECK (position >= 0),
    delivered  bigint      NOT NULL DEFAULT 0 CONSTRAINT feed_consumers_delivered CHECK (delivered >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A capture's hold, found from its transfer.
CREATE INDEX holds_transfer ON wallet_ledger.holds (transfer_id) WHERE transfer_id IS NOT NULL;

-- feed_open_xids: the top-level xids of this database's open transactions (other than the
-- caller's), prepared ones included. Transactions of other databases cannot write here, so the
-- feed never waits for them.
CREATE FUNCTION wallet_ledger.feed_open_xids()
RETURNS bigint[]
LANGUAGE sql VOLATILE AS $fn$
    SELECT ARRAY(
        SELECT a.backend_xid::text::bigint
          FROM pg_stat_activity a
         WHERE a.datid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
           AND a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
        UNION ALL
        SELECT p.transaction::text::bigint
          FROM pg_prepared_xacts p
         WHERE p.database = current_database())
$fn$;

-- feed_advance: records a mark for p_mark (the sequence's last value, read by the caller in an
-- earlier statement; 0 = record none) and moves the horizon to the newest stable mark.
-- Returns the horizon.
-- Rule: the caller reads the feed in a later statement (a newer snapshot), never in the
-- statement that calls this, whose snapshot may predate the commits this call found ended.
CREATE FUNCTION wallet_ledger.feed_advance(p_mark bigint)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_open    bigint[];
    v_stable  bigint;
    v_horizon bigint;
BEGIN
    SELECT s.horizon INTO v_horizon FROM wallet_ledger.feed_state s;
    v_open := wallet_ledger.feed_open_xids();
    -- A mark is worth keeping only if no pending mark covers it: an older mark with as high a
    -- position waits for a subset of what this one would wait for.
    IF p_mark > v_horizon
       AND NOT EXISTS (SELECT 1 FROM wallet_ledger.feed_marks m WHERE m.mark >= p_mark) THEN
        INSERT INTO wallet_ledger.feed_marks (mark, xids) VALUES (p_mark, v_open);
    END IF;
    SELECT max(m.mark) INTO v_stable FROM wallet_ledger.feed_marks m WHERE NOT (m.xids && v_open);
    IF v_stable IS NULL THEN
        RETURN v_horizon;
    END IF;
    DELETE FROM wallet_ledger.feed_marks m WHERE m.mark <= v_stable;
    IF v_stable > v_horizon THEN
        UPDATE wallet_ledger.feed_state s SET horizon = v_stable WHERE s.horizon < v_stable;
        SELECT s.horizon INTO v_horizon FROM wallet_ledger.feed_state s;
    END IF;
    RETURN v_horizon;
END
$fn$;

-- The triggers that record account and hold changes, and the sequence's cache (not in Citus
-- mode: the feed is refused there, docs/citus.md).
CREATE FUNCTION wallet_ledger.feed_account_event()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO wallet_ledger.feed_events (kind, account_id, balance, version, status, min_balance, max_balance)
    VALUES (CASE WHEN TG_OP = 'INSERT' THEN 'account_opened'
                 WHEN NEW.status IS DISTINCT FROM OLD.status THEN 'status_changed'
                 ELSE 'limits_changed' END,
            NEW.id, NEW.balance, NEW.version, NEW.status, NEW.min_balance, NEW.max_balance);
    RETURN NULL;
END
$fn$;

CREATE FUNCTION wallet_ledger.feed_hold_event()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO wallet_ledger.feed_events (kind, account_id, hold_id, amount, balance, version, status,
                                           min_balance, max_balance)
    SELECT CASE NEW.event WHEN 'created' THEN 'hold_placed' ELSE 'hold_' || NEW.event END,
           a.id, NEW.hold_id, NEW.amount, a.balance, a.version, a.status, a.min_balance, a.max_balance
      FROM wallet_ledger.holds h JOIN wallet_ledger.accounts a ON a.id = h.from_account
     WHERE h.id = NEW.hold_id;
    RETURN NULL;
END
$fn$;

DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    ALTER SEQUENCE wallet_ledger.transfers_id_seq CACHE 1;
    -- Column lists: a transfer's balance update fires neither (it sets none of these columns).
    CREATE TRIGGER feed_account_opened AFTER INSERT ON wallet_ledger.accounts
        FOR EACH ROW EXECUTE FUNCTION wallet_ledger.feed_account_event();
    CREATE TRIGGER feed_account_changed AFTER UPDATE OF status, min_balance, max_balance ON wallet_ledger.accounts
        FOR EACH ROW
        WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.min_balance IS DISTINCT FROM NEW.min_balance
              OR OLD.max_balance IS DISTINCT FROM NEW.max_balance)
        EXECUTE FUNCTION wallet_ledger.feed_account_event();
    -- A capture is its transfer's change (found by holds_transfer), not a hold event of its own.
    CREATE TRIGGER feed_hold_changed AFTER INSERT ON wallet_ledger.hold_events
        FOR EACH ROW WHEN (NEW.event <> 'captured')
        EXECUTE FUNCTION wallet_ledger.feed_hold_event();
END
$do$;

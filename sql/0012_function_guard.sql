-- Migration 12: the ledger's functions are the only write path, and the movement tables'
-- foreign keys give way to a cheaper guard (docs/design.md, "The write guard").
--
-- Every foreign-key check on a movement cost the server a query of its own (six per transfer,
-- about 29 % of a batched transfer's instructions, docs/benchmarks.md). The references they
-- checked are written only by the ledger's functions, which write an entry, a transfer or a
-- hold only for accounts they have just locked (so the accounts exist), and only for the
-- transfer and hold they have just inserted; nothing deletes an account, a transfer or a hold.
-- So the check is kept for every other writer and skipped for the functions' own rows:
--
-- * Privileges: every function of the schema runs as its owner (SECURITY DEFINER, with a
--   pinned search_path so that a caller's search_path cannot substitute operators or types
--   inside it), and a role given the ledger by `Ledger::grant_access` gets SELECT on the
--   tables, the functions, and INSERT of only the columns a new account or currency is made
--   of: never INSERT, UPDATE or DELETE on balances, transfers, entries or holds.
-- * The reference check, for roles privileges do not bind (the owner, a superuser): a row
--   trigger on entries, transfers, holds and hold_events refuses a row naming an account,
--   transfer or hold that does not exist, with foreign_key_violation (23503) as the keys did,
--   locking the row it names FOR KEY SHARE as they did; triggers on accounts, transfers and
--   holds refuse deleting (or re-numbering, or truncating) a row that others still name. The
--   row triggers skip a row written while search_path is the ledger functions' pinned
--   `pg_catalog, pg_temp`: inside one of its functions, which PostgreSQL sets on entry and
--   restores on exit (an error included), so the functions' own rows pay one setting lookup
--   instead of a query per reference, and nothing else is skipped unless it sets that exact
--   path on purpose.
--
-- Kept: entries_account_version (unique (account_id, account_version)) is the chain's guard
-- against a lost update, which no privilege replaces; accounts_currency_fkey (opening an
-- account, not a movement); every CHECK and domain.
--
-- Not in Citus mode: its distribution dropped these keys already (sql/citus/0001), and the
-- guard is not offered there (docs/citus.md).

-- The reference check of a row written outside the ledger's functions.
CREATE FUNCTION wallet_ledger.check_references()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_missing text;
BEGIN
    IF TG_TABLE_NAME = 'entries' THEN
        PERFORM 1 FROM wallet_ledger.accounts a WHERE a.id = NEW.account_id FOR KEY SHARE;
        IF NOT FOUND THEN
            v_missing := format('account_id %s', NEW.account_id);
        ELSE
            PERFORM 1 FROM wallet_ledger.transfers t WHERE t.id = NEW.transfer_id FOR KEY SHARE;
            IF NOT FOUND THEN
                v_missing := format('transfer_id %s', NEW.transfer_id);
            END IF;
        END IF;
    ELSIF TG_TABLE_NAME = 'transfers' OR TG_TABLE_NAME = 'holds' THEN
        IF NEW.from_account IS NOT NULL THEN
            PERFORM 1 FROM wallet_ledger.accounts a WHERE a.id = NEW.from_account FOR KEY SHARE;
            IF NOT FOUND THEN
                v_missing := format('from_account %s', NEW.from_account);
            END IF;
        END IF;
        IF v_missing IS NULL AND NEW.to_account IS NOT NULL THEN
            PERFORM 1 FROM wallet_ledger.accounts a WHERE a.id = NEW.to_account FOR KEY SHARE;
            IF NOT FOUND THEN
                v_missing := format('to_account %s', NEW.to_account);
            END IF;
        END IF;
        IF v_missing IS NULL AND TG_TABLE_NAME = 'holds' THEN
            IF NEW.transfer_id IS NOT NULL THEN
                PERFORM 1 FROM wallet_ledger.transfers t WHERE t.id = NEW.transfer_id FOR KEY SHARE;
                IF NOT FOUND THEN
                    v_missing := format('transfer_id %s', NEW.transfer_id);
                END IF;
            END IF;
        END IF;
    ELSIF TG_TABLE_NAME = 'hold_events' THEN
        PERFORM 1 FROM wallet_ledger.holds h WHERE h.id = NEW.hold_id FOR KEY SHARE;
        IF NOT FOUND THEN
            v_missing := format('hold_id %s', NEW.hold_id);
        END IF;
    END IF;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert or update on table "%" violates the ledger''s references: % does not exist',
                        TG_TABLE_NAME, v_missing
            USING ERRCODE = 'foreign_key_violation', SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$fn$;

-- A row others name may not be deleted or re-numbered (the ledger's functions do neither).
CREATE FUNCTION wallet_ledger.check_referenced()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_by text;
BEGIN
    IF TG_TABLE_NAME = 'accounts' THEN
        IF EXISTS (SELECT 1 FROM wallet_ledger.entries e WHERE e.account_id = OLD.id) THEN
            v_by := 'entries';
        ELSIF EXISTS (SELECT 1 FROM wallet_ledger.transfers t WHERE t.from_account = OLD.id OR t.to_account = OLD.id) THEN
            v_by := 'transfers';
        ELSIF EXISTS (SELECT 1 FROM wallet_ledger.holds h WHERE h.from_account = OLD.id OR h.to_account = OLD.id) THEN
            v_by := 'holds';
        END IF;
    ELSIF TG_TABLE_NAME = 'transfers' THEN
        IF EXISTS (SELECT 1 FROM wallet_ledger.entries e WHERE e.transfer_id = OLD.id) THEN
            v_by := 'entries';
        ELSIF EXISTS (SELECT 1 FROM wallet_ledger.holds h WHERE h.transfer_id = OLD.id) THEN
            v_by := 'holds';
        END IF;
    ELSIF TG_TABLE_NAME = 'holds' THEN
        IF EXISTS (SELECT 1 FROM wallet_ledger.hold_events v WHERE v.hold_id = OLD.id) THEN
            v_by := 'hold_events';
        END IF;
    END IF;
    IF v_by IS NOT NULL THEN
        RAISE EXCEPTION 'update or delete on table "%" violates the ledger''s references: row % is still named by %',
                        TG_TABLE_NAME, OLD.id, v_by
            USING ERRCODE = 'foreign_key_violation', SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$fn$;

-- A truncated table others still name (a TRUNCATE of all of them together is allowed, as with
-- foreign keys: this runs after the whole command).
CREATE FUNCTION wallet_ledger.check_truncated()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF (TG_TABLE_NAME = 'accounts' AND (EXISTS (SELECT 1 FROM wallet_ledger.entries)
                                        OR EXISTS (SELECT 1 FROM wallet_ledger.transfers)
                                        OR EXISTS (SELECT 1 FROM wallet_ledger.holds)))
       OR (TG_TABLE_NAME = 'transfers' AND (EXISTS (SELECT 1 FROM wallet_ledger.entries)
                                            OR EXISTS (SELECT 1 FROM wallet_ledger.holds h WHERE h.transfer_id IS NOT NULL)))
       OR (TG_TABLE_NAME = 'holds' AND EXISTS (SELECT 1 FROM wallet_ledger.hold_events)) THEN
        RAISE EXCEPTION 'cannot truncate table "%": other ledger tables still name its rows', TG_TABLE_NAME
            USING ERRCODE = 'feature_not_supported', SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$fn$;

DO $do$
DECLARE
    v_schema regnamespace := (SELECT c.relnamespace FROM pg_class c WHERE c.oid = 'wallet_ledger.accounts'::regclass);
    v_function record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        DROP FUNCTION wallet_ledger.check_references();
        DROP FUNCTION wallet_ledger.check_referenced();
        DROP FUNCTION wallet_ledger.check_truncated();
        RETURN;
    END IF;
    ALTER TABLE wallet_ledger.entries DROP CONSTRAINT IF EXISTS entries_account_id_fkey,
                                      DROP CONSTRAINT IF EXISTS entries_transfer_id_fkey;
    ALTER TABLE wallet_ledger.transfers DROP CONSTRAINT IF EXISTS transfers_from_account_fkey,
                                        DROP CONSTRAINT IF EXISTS transfers_to_account_fkey;
    ALTER TABLE wallet_ledger.holds DROP CONSTRAINT IF EXISTS holds_from_account_fkey,
                                    DROP CONSTRAINT IF EXISTS holds_to_account_fkey,
                                    DROP CONSTRAINT IF EXISTS holds_transfer_id_fkey;
    ALTER TABLE wallet_ledger.hold_events DROP CONSTRAINT IF EXISTS hold_events_hold_id_fkey;

    -- The reference checks, skipped for the functions' own rows.
    CREATE TRIGGER entries_references BEFORE INSERT OR UPDATE ON wallet_ledger.entries FOR EACH ROW
        WHEN (current_setting('search_path') IS DISTINCT FROM 'pg_catalog, pg_temp')
        EXECUTE FUNCTION wallet_ledger.check_references();
    CREATE TRIGGER transfers_references BEFORE INSERT OR UPDATE ON wallet_ledger.transfers FOR EACH ROW
        WHEN (current_setting('search_path') IS DISTINCT FROM 'pg_catalog, pg_temp')
        EXECUTE FUNCTION wallet_ledger.check_references();
    CREATE TRIGGER holds_references BEFORE INSERT OR UPDATE ON wallet_ledger.holds FOR EACH ROW
        WHEN (current_setting('search_path') IS DISTINCT FROM 'pg_catalog, pg_temp')
        EXECUTE FUNCTION wallet_ledger.check_references();
    CREATE TRIGGER hold_events_references BEFORE INSERT OR UPDATE ON wallet_ledger.hold_events FOR EACH ROW
        WHEN (current_setting('search_path') IS DISTINCT FROM 'pg_catalog, pg_temp')
        EXECUTE FUNCTION wallet_ledger.check_references();
    CREATE TRIGGER accounts_referenced BEFORE DELETE OR UPDATE OF id ON wallet_ledger.accounts FOR EACH ROW
        EXECUTE FUNCTION wallet_ledger.check_referenced();
    CREATE TRIGGER transfers_referenced BEFORE DELETE OR UPDATE OF id ON wallet_ledger.transfers FOR EACH ROW
        EXECUTE FUNCTION wallet_ledger.check_referenced();
    CREATE TRIGGER holds_referenced BEFORE DELETE OR UPDATE OF id ON wallet_ledger.holds FOR EACH ROW
        EXECUTE FUNCTION wallet_ledger.check_referenced();
    CREATE TRIGGER accounts_truncated AFTER TRUNCATE ON wallet_ledger.accounts
        FOR EACH STATEMENT EXECUTE FUNCTION wallet_ledger.check_truncated();
    CREATE TRIGGER transfers_truncated AFTER TRUNCATE ON wallet_ledger.transfers
        FOR EACH STATEMENT EXECUTE FUNCTION wallet_ledger.check_truncated();
    CREATE TRIGGER holds_truncated AFTER TRUNCATE ON wallet_ledger.holds
        FOR EACH STATEMENT EXECUTE FUNCTION wallet_ledger.check_truncated();

    -- Every function, trigger functions included, runs as the owner (a granted role's INSERT of
    -- an account fires the feed's trigger, which writes feed_events as the owner).
    FOR v_function IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = v_schema AND p.prokind = 'f' LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', v_function.oid::regprocedure);
    END LOOP;
END
$do$;

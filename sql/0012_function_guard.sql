-- Migration 12: the ledger's functions are the only write path, and the foreign keys of the
-- movement tables give way to that guard (docs/design.md, "The write guard").
--
-- Every foreign-key check on a movement cost the server a query of its own (six per transfer,
-- about 29 % of a batched transfer's instructions, docs/benchmarks.md). The references they
-- checked are made only by the ledger's functions, which write an entry, a transfer or a hold
-- only for accounts they have just locked (so the accounts exist), and only for the transfer
-- and hold they have just inserted; nothing deletes an account, a transfer or a hold. What the
-- keys added was a refusal of a bad row written by *something else*. That refusal now comes from
-- privileges: every function of the schema runs as its owner (SECURITY DEFINER, with a pinned
-- search_path so that a caller's search_path cannot substitute operators or types inside it),
-- and a role given the ledger by `Ledger::grant_access` gets SELECT on the tables, the
-- functions, and INSERT of only the columns a new account or currency is made of, never
-- INSERT, UPDATE or DELETE on accounts' balances, transfers, entries or holds. The owner (and a
-- superuser) can still write anything, as they could drop a foreign key; the audit's
-- `references` check reports a row that points at nothing.
--
-- Kept: entries_account_version (unique (account_id, account_version)) is the chain's guard
-- against a lost update, which no privilege replaces; accounts_currency_fkey (opening an
-- account, not a movement).
--
-- Not in Citus mode: its distribution dropped these keys already (sql/citus/0001), and the
-- privilege guard is not offered there (docs/citus.md).
DO $do$
DECLARE
    v_schema regnamespace := (SELECT c.relnamespace FROM pg_class c WHERE c.oid = 'wallet_ledger.accounts'::regclass);
    v_function regprocedure;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
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
    -- Every function, trigger functions included (a granted role's INSERT of an account fires
    -- the feed's trigger, which writes feed_events as the owner).
    FOR v_function IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = v_schema AND p.prokind = 'f' LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', v_function);
    END LOOP;
END
$do$;

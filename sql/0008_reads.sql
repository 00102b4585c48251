-- Migration 8: what a wallet product reads (issue 17): account metadata and external ids, an
-- own timestamp on every entry, and the indexes behind lookups, listings, statements and
-- balances as of a time. No function is replaced: the money-moving functions insert entries
-- as before, and the new column's default stamps them.

-- Account metadata: a JSON object of bounded size (limits::METADATA_BYTES_MAX, measured on
-- PostgreSQL's text form of the jsonb). A constant default adds the column without rewriting
-- the table. External ids: the caller's own name for an account, unique per ledger.
ALTER TABLE wallet_ledger.accounts
    ADD COLUMN external_id text NULL
        CONSTRAINT accounts_external_id_length CHECK (octet_length(external_id) BETWEEN 1 AND 256),
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb
        CONSTRAINT accounts_metadata_object CHECK (jsonb_typeof(metadata) = 'object')
        CONSTRAINT accounts_metadata_size CHECK (octet_length(metadata::text) <= 8192);

-- Unique external ids. Citus refuses a unique index on a distributed table that does not
-- include the distribution column (accounts.id), and its migrations distribute accounts after
-- this one runs, so with the citus extension installed the index is not made and the ledger
-- refuses external ids (docs/citus.md says what it would take).
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        CREATE UNIQUE INDEX accounts_external_id ON wallet_ledger.accounts (external_id);
    END IF;
END
$do$;

-- Account listings page by (created_at, id); each filter that can drive a listing has its index.
CREATE INDEX accounts_listing ON wallet_ledger.accounts (created_at, id);
CREATE INDEX accounts_currency_listing ON wallet_ledger.accounts (currency, created_at, id);
CREATE INDEX accounts_name_prefix ON wallet_ledger.accounts USING spgist (name);
CREATE INDEX accounts_metadata ON wallet_ledger.accounts USING gin (metadata jsonb_path_ops);

-- Every entry's own time, taken when the entry is inserted: clock_timestamp() is evaluated per
-- row at INSERT, and every function inserts its entries after it holds the accounts' row locks,
-- so a later entry of the same account (which waited for the earlier one's commit) has a later
-- time. Existing entries take their transfer's time (the start of its transaction), raised to
-- the latest time of the account's earlier entries: two transactions that began in one order
-- can take an account's lock in the other, and times must never go back along a chain. The
-- column is added without a default, filled, and only then given its volatile default: a
-- volatile default on ADD COLUMN would rewrite the table evaluating it once per existing row.
-- The backfill reads the transfers in a materialized CTE so that Citus (entries and transfers
-- distributed on different columns) can plan it as well; the window is per account, which is
-- entries' distribution column there.
ALTER TABLE wallet_ledger.entries ADD COLUMN created_at timestamptz NULL;
WITH t AS MATERIALIZED (SELECT id, created_at FROM wallet_ledger.transfers),
     stamped AS MATERIALIZED (
         SELECT e.id, e.account_id,
                max(t.created_at) OVER (PARTITION BY e.account_id ORDER BY e.account_version) AS created_at
           FROM wallet_ledger.entries e JOIN t ON t.id = e.transfer_id
     )
UPDATE wallet_ledger.entries e SET created_at = s.created_at
  FROM stamped s
 WHERE s.id = e.id AND s.account_id = e.account_id;
ALTER TABLE wallet_ledger.entries
    ALTER COLUMN created_at SET DEFAULT clock_timestamp(),
    ALTER COLUMN created_at SET NOT NULL;

-- An account's entries in time order (which is its chain order): statements, balances as of a
-- time, the entries of a period, and the transfers of one account, page by page.
CREATE INDEX entries_account_time ON wallet_ledger.entries (account_id, created_at, id);

-- All transfers in time order, page by page.
CREATE INDEX transfers_listing ON wallet_ledger.transfers (created_at, id);

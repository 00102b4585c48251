-- Migration 1: the core double-entry model.
-- Every invariant the Rust code enforces is repeated here as a constraint, as a second line:
-- positive transfer amounts, balances at or above their floor, entries that reference real
-- transfers and accounts, one entry per account version.
-- Money enters a currency only through unbounded accounts (min_balance IS NULL), so per currency
-- the sum of all balances is always zero.

CREATE TABLE wallet_ledger.currencies (
    code  text     PRIMARY KEY CHECK (code ~ '^[A-Z0-9_]{1,16}$'),
    scale smallint NOT NULL CHECK (scale BETWEEN 0 AND 18)
);

CREATE TABLE wallet_ledger.accounts (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    currency    text        NOT NULL REFERENCES wallet_ledger.currencies (code),
    balance     numeric     NOT NULL DEFAULT 0,
    -- the floor: 0 = no overdraft, negative = credit line, NULL = unbounded (system/issuer account)
    min_balance numeric     NULL CHECK (min_balance IS NULL OR (min_balance <= 0 AND min_balance > -1e24)),
    -- reserved by open holds; available = balance - held, and available must respect the floor
    held        numeric     NOT NULL DEFAULT 0 CHECK (held >= 0 AND held < 1e24),
    version     bigint      NOT NULL DEFAULT 0 CHECK (version >= 0),
    name        text        NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_floor CHECK (min_balance IS NULL OR balance - held >= min_balance),
    -- keeps every balance readable as a rust_decimal::Decimal (96-bit mantissa, < 7.9e28):
    -- at most 28 digits counting the decimal places
    CONSTRAINT accounts_balance_magnitude CHECK (abs(balance) * power(10::numeric, scale(balance)) < 1e28)
);

CREATE TABLE wallet_ledger.transfers (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_account    bigint      NOT NULL REFERENCES wallet_ledger.accounts (id),
    to_account      bigint      NOT NULL REFERENCES wallet_ledger.accounts (id),
    amount          numeric     NOT NULL CHECK (amount > 0),
    -- caller's key, or an internal one ('~' + uuid) for calls without a key
    idempotency_key text        NULL CONSTRAINT transfers_idempotency_key UNIQUE,
    memo            text        NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transfers_distinct_accounts CHECK (from_account <> to_account)
);

CREATE TABLE wallet_ledger.entries (
    id              bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id     bigint  NOT NULL REFERENCES wallet_ledger.transfers (id),
    account_id      bigint  NOT NULL REFERENCES wallet_ledger.accounts (id),
    amount          numeric NOT NULL CHECK (amount <> 0), -- signed: negative = debit
    balance_after   numeric NOT NULL,
    account_version bigint  NOT NULL CHECK (account_version > 0),
    -- one entry per account version: the chain an audit replays, and the history index
    CONSTRAINT entries_account_version UNIQUE (account_id, account_version)
);

CREATE INDEX entries_transfer ON wallet_ledger.entries (transfer_id);

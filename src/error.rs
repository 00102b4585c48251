//! [`LedgerError`]: every way a ledger call can refuse or fail, as data a caller can match on.

use postgres::error::SqlState;
use rust_decimal::Decimal;

use crate::values::{AccountId, HoldId, HoldState, TransferId};

/// Everything a [`Ledger`](crate::Ledger) call can return instead of a result.
///
/// Refusals (the request was understood and rejected, nothing changed) carry the data a caller
/// needs to explain them: [`InsufficientFunds`](LedgerError::InsufficientFunds) says how much was
/// available. Failures of the database or the pool keep their source error.
/// Ask [`is_retryable`](LedgerError::is_retryable) whether repeating the same call may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The debited account would fall below its floor (`min_balance`).
    #[error("insufficient funds in account {account}: available {available}, requested {requested}")]
    InsufficientFunds {
        /// The account that would be overdrawn.
        account: AccountId,
        /// What could be taken out without breaking the floor (balance minus floor).
        available: Decimal,
        /// The amount asked for.
        requested: Decimal,
    },
    /// The account is frozen ([`Ledger::freeze`](crate::Ledger::freeze)): it pays nothing
    /// (transfers, postings, new holds, captures of its holds) until it is unfrozen.
    #[error("account {account} is frozen")]
    AccountFrozen {
        /// The frozen account.
        account: AccountId,
    },
    /// The account is closed ([`Ledger::close`](crate::Ledger::close)): nothing moves in or out,
    /// and its state does not change again.
    #[error("account {account} is closed")]
    AccountClosed {
        /// The closed account.
        account: AccountId,
    },
    /// [`Ledger::close`](crate::Ledger::close) of an account that still has a balance or holds.
    #[error("account {account} is not empty: balance {balance}, held {held}")]
    AccountNotEmpty {
        /// The account.
        account: AccountId,
        /// Its balance (must be zero to close).
        balance: Decimal,
        /// What its pending holds reserve (must be zero to close).
        held: Decimal,
    },
    /// The credit would take the account's balance above its `max_balance`.
    #[error("balance limit of account {account} exceeded: max balance {max_balance}, requested {requested}")]
    BalanceLimitExceeded {
        /// The credited account.
        account: AccountId,
        /// Its ceiling.
        max_balance: Decimal,
        /// The amount asked for.
        requested: Decimal,
    },
    /// A limit change ([`Ledger::set_min_balance`](crate::Ledger::set_min_balance),
    /// [`Ledger::set_max_balance`](crate::Ledger::set_max_balance)) that the account's current
    /// state already breaks: the floor above `balance - held`, or the ceiling below `balance`.
    #[error("account {account} (balance {balance}, held {held}) would break the limits asked for (min {min_balance:?}, max {max_balance:?})")]
    LimitBreached {
        /// The account.
        account: AccountId,
        /// Its balance.
        balance: Decimal,
        /// What its pending holds reserve.
        held: Decimal,
        /// The floor the account would have (`None` = unbounded).
        min_balance: Option<Decimal>,
        /// The ceiling the account would have (`None` = none).
        max_balance: Option<Decimal>,
    },
    /// A reversal of more than is left to reverse of the transfer.
    #[error("reversal exceeds transfer {transfer}: {reversible} is left to reverse")]
    ReversalExceedsOriginal {
        /// The transfer being reversed.
        transfer: TransferId,
        /// What is left to reverse (its amount minus its earlier reversals).
        reversible: Decimal,
    },
    /// No transfer has this id.
    #[error("transfer {transfer} not found")]
    TransferNotFound {
        /// The id that matched no transfer.
        transfer: TransferId,
    },
    /// No account has this id.
    #[error("account {account} not found")]
    AccountNotFound {
        /// The id that matched no account.
        account: AccountId,
    },
    /// A transfer from an account to itself.
    #[error("transfer from account {account} to itself")]
    SameAccount {
        /// The account named on both sides.
        account: AccountId,
    },
    /// The amount is not positive, has more decimal places than its currency allows, or is
    /// out of the supported range.
    #[error("invalid amount {amount}: {reason}")]
    InvalidAmount {
        /// The amount as given.
        amount: Decimal,
        /// Why it was refused.
        reason: String,
    },
    /// The two accounts of a transfer hold different currencies.
    #[error("currency mismatch: account {from} holds {from_currency}, account {to} holds {to_currency}")]
    CurrencyMismatch {
        /// The debited account.
        from: AccountId,
        /// Its currency.
        from_currency: String,
        /// The credited account.
        to: AccountId,
        /// Its currency.
        to_currency: String,
    },
    /// The currency code was never defined with [`Ledger::define_currency`](crate::Ledger::define_currency).
    #[error("unknown currency {code:?}")]
    UnknownCurrency {
        /// The code as given.
        code: String,
    },
    /// [`Ledger::define_currency`](crate::Ledger::define_currency) with a code that already exists
    /// with another scale.
    #[error("currency {code} already defined with scale {existing}, not {requested}")]
    CurrencyConflict {
        /// The currency code.
        code: String,
        /// The scale it has.
        existing: u32,
        /// The scale asked for.
        requested: u32,
    },
    /// The idempotency key was already used by a committed transfer (or hold) with other content.
    #[error("idempotency key {key:?} was already used for a different request ({existing})")]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The transfer or hold that holds it.
        existing: KeyHolder,
    },
    /// [`NewAccount::external_id`](crate::NewAccount::external_id) names an external id another
    /// account of this ledger already has. Nothing was changed.
    #[error("external id {external_id:?} belongs to another account")]
    ExternalIdTaken {
        /// The external id as given.
        external_id: String,
    },
    /// No hold has this id.
    #[error("hold {hold} not found")]
    HoldNotFound {
        /// The id that matched no hold.
        hold: HoldId,
    },
    /// The hold already ended (captured, voided or expired), or lapsed and awaits its expiry
    /// worker (`state` is then `Expired`). A hold ends exactly once.
    #[error("hold {hold} is not pending: it is {state}")]
    HoldNotPending {
        /// The hold.
        hold: HoldId,
        /// The state it is in.
        state: HoldState,
    },
    /// An account (or hold) row was locked by another transaction and the [`LockWait`](crate::LockWait)
    /// policy did not allow waiting (any longer).
    #[error("row lock not available (lock wait policy: {policy})")]
    LockUnavailable {
        /// The policy in force, as text (`nowait`, `timeout 100ms`).
        policy: String,
        /// The database error that reported it.
        #[source]
        source: postgres::Error,
    },
    /// The connection was lost after the request was sent and retries could not settle whether
    /// it was applied. Repeat the call **with this idempotency key** to find out: it either
    /// replays the committed transfer or applies it once.
    #[error("outcome unknown after the connection was lost; retry with idempotency key {idempotency_key:?}")]
    OutcomeUnknown {
        /// The key the transfer was sent with (the caller's, or the internal one).
        idempotency_key: String,
        /// The last error seen.
        #[source]
        source: postgres::Error,
    },
    /// The connection was lost after a capture or void was sent and retries could not settle
    /// whether it was applied. The hold's state tells: call again, and `HoldNotPending` with the
    /// state this call would have reached (and, for a capture, the same amount) means it was.
    #[error("outcome of the operation on hold {hold} unknown after the connection was lost")]
    HoldOutcomeUnknown {
        /// The hold.
        hold: HoldId,
        /// The error that left the outcome open.
        #[source]
        source: postgres::Error,
    },
    /// A [`Posting`](crate::Posting)'s legs do not sum to zero in a currency: it would create
    /// or destroy money. Nothing was changed.
    #[error("unbalanced posting: the legs in {currency} sum to {sum}, not zero")]
    Unbalanced {
        /// The first currency (by code) whose legs do not sum to zero.
        currency: String,
        /// What they sum to.
        sum: Decimal,
    },
    /// A batch with more items than [`BATCH_ITEMS_MAX`](crate::limits::BATCH_ITEMS_MAX) (or a
    /// posting with more legs than [`POSTING_LEGS_MAX`](crate::limits::POSTING_LEGS_MAX)).
    /// Nothing was sent.
    #[error("{items} items, more than the maximum of {max} per call")]
    BatchTooLarge {
        /// How many items (or legs) were given.
        items: usize,
        /// The most allowed.
        max: usize,
    },
    /// The connection was lost after a batch was sent and retries could not settle whether it
    /// was applied. Every item carried an idempotency key: repeat the items **with these keys**
    /// (the whole batch again, or each transfer alone) to find out; each either replays or
    /// applies once.
    #[error("outcome of a batch unknown after the connection was lost; retry with its idempotency keys ({} keys)", idempotency_keys.len())]
    BatchOutcomeUnknown {
        /// The keys the items were sent with, in item order (the callers' or internal ones).
        /// From the combiner, only the caller's own transfer's key.
        idempotency_keys: Vec<String>,
        /// The error that left the outcome open (shared by every caller of a combined batch).
        #[source]
        source: std::sync::Arc<postgres::Error>,
    },
    /// The combined batch this transfer was queued in (see
    /// [`CombineConfig`](crate::CombineConfig)) failed as a whole, for every transfer in it:
    /// none of them was applied. `source` is the batch's error, shared by every caller.
    #[error("the combined batch this transfer was part of failed")]
    BatchFailed {
        /// The batch's error.
        #[source]
        source: std::sync::Arc<LedgerError>,
    },
    /// An argument other than an amount is malformed (too long, contains NUL, out of range).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which argument.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database's schema was written by a newer wallet-ledger than this one.
    #[error("database schema version {found} is newer than this wallet-ledger supports ({supported})")]
    SchemaTooNew {
        /// The version found in the database.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },
    /// The database's schema is older than this wallet-ledger needs (or absent), and the ledger
    /// was built with `migrate(false)`: apply the migrations first.
    #[error("schema {schema} is at version {found}, this wallet-ledger needs {required}: run the migrations")]
    SchemaOutdated {
        /// The PostgreSQL schema checked.
        schema: String,
        /// The version found (0: no ledger schema there).
        found: i32,
        /// The version this build needs.
        required: i32,
    },
    /// The operation is not available on this database: batches and multi-leg postings in
    /// Citus mode (their set-based statements lock many accounts in one statement, which Citus
    /// refuses across shards). Nothing was sent.
    #[error("{operation} is not supported here: {reason}")]
    Unsupported {
        /// The operation asked for.
        operation: &'static str,
        /// Why not, and what to use instead.
        reason: &'static str,
    },
    /// A [`Ledger::consume`](crate::Ledger::consume) handler returned an error: its transaction
    /// was rolled back and the consumer's position did not move, so the same changes come again
    /// on the next call.
    #[error("the handler of consumer {consumer} failed: {source}")]
    Handler {
        /// The consumer's name.
        consumer: String,
        /// The handler's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A database constraint refused a write the library did not catch first: a defect, or data
    /// changed behind the library's back.
    #[error("database constraint {constraint} refused the write")]
    ConstraintViolation {
        /// The constraint's name.
        constraint: String,
        /// The database error.
        #[source]
        source: postgres::Error,
    },
    /// A ledger function answered with a row the library cannot read: an outcome it does not
    /// know, or a column missing, NULL or of another type than the protocol says. A defect (the
    /// database's functions and this build out of step, or a function replaced behind the
    /// library's back), never a refusal; repeating the call does not help.
    #[error("{function}() answered with a row this wallet-ledger cannot read: {detail}")]
    UnexpectedRow {
        /// The ledger function (or query) that answered.
        function: &'static str,
        /// What was wrong with the row.
        detail: String,
    },
    /// A migration the database has applied differs from the text this build carries for the
    /// same version: released migrations never change, so the database was migrated by a build
    /// whose migrations were edited (or was changed by hand). Nothing was applied.
    #[error("migration {version} ({name}) applied to schema {schema} differs from this build's: checksum {applied} in the database, {expected} here")]
    MigrationChanged {
        /// The PostgreSQL schema checked.
        schema: String,
        /// The migration's version number.
        version: i32,
        /// The migration's name.
        name: &'static str,
        /// The checksum recorded when it was applied (SHA-256 of its text, hex).
        applied: String,
        /// The checksum of this build's text.
        expected: String,
    },
    /// Any other database error (connection, SQL, server state).
    #[error("database error")]
    Database(#[source] postgres::Error),
    /// No pooled connection could be had in time.
    #[error("connection pool error")]
    Pool(#[source] r2d2::Error),
    /// A synchronous call on a thread that drives an async runtime: a tokio task (an axum or
    /// tonic handler), or the future a runtime's `block_on` polls (the body of `#[tokio::main]`
    /// or `#[tokio::test]`). The `postgres` client blocks on a runtime of its own, which tokio
    /// forbids there with a panic ("Cannot start a runtime from within a runtime"); the ledger
    /// refuses instead, before anything is sent. Nothing was changed; the same call on the same
    /// thread is refused again.
    ///
    /// Wrap the call in `tokio::task::spawn_blocking` (or `tokio::task::block_in_place` on a
    /// multi-thread runtime): see "From async code" in the [crate docs](crate).
    #[error("a synchronous wallet-ledger call on a thread that drives an async runtime would block it (tokio forbids it with a panic): wrap the call in tokio::task::spawn_blocking")]
    AsyncRuntime,
    /// The async door's pool (`aio`, deadpool-postgres) gave no connection in time, or was
    /// closed. Retryable, as [`LedgerError::Pool`].
    #[error("no pooled connection: {0}")]
    AsyncPool(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What an idempotency key already belongs to.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyHolder {
    /// A committed transfer.
    Transfer(TransferId),
    /// A hold.
    Hold(HoldId),
}

impl std::fmt::Display for KeyHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyHolder::Transfer(id) => write!(f, "transfer {id}"),
            KeyHolder::Hold(id) => write!(f, "hold {id}"),
        }
    }
}

impl LedgerError {
    /// Whether repeating the same call may succeed: serialization failures, deadlocks, lost
    /// connections before the request was answered for a keyed call, pool timeouts, and lock
    /// waits refused by the [`LockWait`](crate::LockWait) policy.
    ///
    /// [`OutcomeUnknown`](LedgerError::OutcomeUnknown) is not retryable as the same call without
    /// a key; repeat it with the key it carries.
    pub fn is_retryable(&self) -> bool {
        match self {
            LedgerError::LockUnavailable { .. } | LedgerError::Pool(_) | LedgerError::AsyncPool(_) => true,
            LedgerError::Database(e) => is_transient(e),
            LedgerError::BatchFailed { source } => source.is_retryable(),
            _ => false,
        }
    }

    /// A database error that repeating the whole operation may cure (see [`is_retryable`](Self::is_retryable)).
    pub(crate) fn is_transient_database(&self) -> bool {
        matches!(self, LedgerError::Database(e) if is_transient(e))
    }

    /// A short, stable name of the variant (`insufficient_funds`, `lock_unavailable`, ...), for
    /// metrics labels and logs; tracing spans record it as `outcome`.
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerError::InsufficientFunds { .. } => "insufficient_funds",
            LedgerError::AccountNotFound { .. } => "account_not_found",
            LedgerError::AccountFrozen { .. } => "account_frozen",
            LedgerError::AccountClosed { .. } => "account_closed",
            LedgerError::AccountNotEmpty { .. } => "account_not_empty",
            LedgerError::BalanceLimitExceeded { .. } => "balance_limit_exceeded",
            LedgerError::LimitBreached { .. } => "limit_breached",
            LedgerError::ReversalExceedsOriginal { .. } => "reversal_exceeds_original",
            LedgerError::TransferNotFound { .. } => "transfer_not_found",
            LedgerError::SameAccount { .. } => "same_account",
            LedgerError::InvalidAmount { .. } => "invalid_amount",
            LedgerError::CurrencyMismatch { .. } => "currency_mismatch",
            LedgerError::UnknownCurrency { .. } => "unknown_currency",
            LedgerError::CurrencyConflict { .. } => "currency_conflict",
            LedgerError::IdempotencyConflict { .. } => "idempotency_conflict",
            LedgerError::ExternalIdTaken { .. } => "external_id_taken",
            LedgerError::HoldNotFound { .. } => "hold_not_found",
            LedgerError::HoldNotPending { .. } => "hold_not_pending",
            LedgerError::LockUnavailable { .. } => "lock_unavailable",
            LedgerError::OutcomeUnknown { .. } => "outcome_unknown",
            LedgerError::HoldOutcomeUnknown { .. } => "hold_outcome_unknown",
            LedgerError::InvalidInput { .. } => "invalid_input",
            LedgerError::SchemaTooNew { .. } => "schema_too_new",
            LedgerError::SchemaOutdated { .. } => "schema_outdated",
            LedgerError::ConstraintViolation { .. } => "constraint_violation",
            LedgerError::Database(_) => "database",
            LedgerError::Pool(_) | LedgerError::AsyncPool(_) => "pool",
            LedgerError::Unbalanced { .. } => "unbalanced",
            LedgerError::BatchTooLarge { .. } => "batch_too_large",
            LedgerError::BatchOutcomeUnknown { .. } => "batch_outcome_unknown",
            LedgerError::BatchFailed { .. } => "batch_failed",
            LedgerError::Unsupported { .. } => "unsupported",
            LedgerError::UnexpectedRow { .. } => "unexpected_row",
            LedgerError::MigrationChanged { .. } => "migration_changed",
            LedgerError::Handler { .. } => "handler",
            LedgerError::AsyncRuntime => "async_runtime",
        }
    }

    /// The SQLSTATE of the underlying database error, when there is one.
    pub fn sql_state(&self) -> Option<&SqlState> {
        match self {
            LedgerError::LockUnavailable { source, .. }
            | LedgerError::OutcomeUnknown { source, .. }
            | LedgerError::HoldOutcomeUnknown { source, .. }
            | LedgerError::ConstraintViolation { source, .. }
            | LedgerError::Database(source) => source.code(),
            LedgerError::BatchOutcomeUnknown { source, .. } => source.code(),
            LedgerError::BatchFailed { source } => source.sql_state(),
            LedgerError::Handler { source, .. } => source.downcast_ref::<postgres::Error>().and_then(|e| e.code()),
            _ => None,
        }
    }
}

/// Transient database errors: repeating the whole transaction may succeed.
pub(crate) fn is_transient(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
    ) || e.code().is_none() && e.as_db_error().is_none() && is_io(e)
}

fn is_io(e: &postgres::Error) -> bool {
    use std::error::Error as _;
    e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// Maps a database error from a write to the most specific variant.
pub(crate) fn from_db(e: postgres::Error) -> LedgerError {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::CHECK_VIOLATION
            || *db.code() == SqlState::FOREIGN_KEY_VIOLATION
            || *db.code() == SqlState::UNIQUE_VIOLATION
        {
            let constraint = db.constraint().unwrap_or("unnamed").to_string();
            return LedgerError::ConstraintViolation { constraint, source: e };
        }
    }
    LedgerError::Database(e)
}

impl From<postgres::Error> for LedgerError {
    fn from(e: postgres::Error) -> Self {
        from_db(e)
    }
}

impl From<r2d2::Error> for LedgerError {
    fn from(e: r2d2::Error) -> Self {
        LedgerError::Pool(e)
    }
}

/// `e` and its causes, joined with ": " (a `postgres::Error` displays as only "db error").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

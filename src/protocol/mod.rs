//! The SQL protocol between the library and the ledger's functions in `sql/`: the statements,
//! the codes passed as parameters, and the decoding of the rows the functions answer with into
//! receipts and typed refusals. No I/O: the driver sends and receives, this module only names
//! and decodes, so a malformed or unexpected row is [`LedgerError::UnexpectedRow`], never a
//! panic.
//!
//! Outcomes and lock modes are named here once; the SQL functions use the same names.

pub(crate) mod audit;
pub(crate) mod batch;
pub(crate) mod feed;
pub(crate) mod hold;
pub(crate) mod posting;
pub(crate) mod reads;
pub(crate) mod reversal;
pub(crate) mod rows;
pub(crate) mod status;
pub(crate) mod transfer;

use postgres::types::FromSql;
use postgres::Row;
use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::model::lock_wait::LockWait;
use crate::values::AccountId;

/// The unique constraint on transfers' idempotency keys (transfers, batches, postings): its
/// violation means a concurrent call with the same key won the race, and a retry replays it.
pub(crate) const KEY_CONSTRAINT: &str = "transfers_idempotency_key";

/// How a ledger function waits for a locked row: its `lock_mode` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub(crate) enum LockMode {
    /// Wait until the row is free.
    Block = 0,
    /// `FOR ... NOWAIT`: refuse at once.
    NoWait = 1,
    /// Wait at most the `timeout_ms` parameter (`SET LOCAL lock_timeout`).
    Timeout = 2,
}

/// `(lock_mode, timeout_ms)` as the ledger's functions take them.
pub(crate) fn lock_params(wait: LockWait) -> (i16, i32) {
    let (mode, timeout_ms) = match wait {
        LockWait::Block => (LockMode::Block, 0),
        LockWait::NoWait => (LockMode::NoWait, 0),
        LockWait::Timeout(_) => (LockMode::Timeout, wait.timeout_ms()),
    };
    (mode as i16, timeout_ms)
}

/// What a ledger function answers in its `outcome` column (or, for a batch, each item's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Applied by this call.
    Ok,
    /// The key's request committed earlier; the answer is that request's.
    Replayed,
    /// The key belongs to a request with other content.
    IdempotencyConflict,
    /// The `account` column names an account that does not exist.
    AccountNotFound,
    /// The two accounts hold different currencies.
    CurrencyMismatch,
    /// The amount has more decimal places than the currency.
    InvalidScale,
    /// The debit would break the floor; `available` says how much could go.
    InsufficientFunds,
    /// A balance would outgrow what the ledger can represent (batch items).
    Overflow,
    /// A posting's legs do not sum to zero in a currency.
    Unbalanced,
    /// No hold has this id.
    HoldNotFound,
    /// The hold has already ended; `state` says how.
    HoldNotPending,
    /// A capture of more than the hold reserved.
    ExceedsHold,
    /// The paying account (`account`) is frozen.
    AccountFrozen,
    /// An account of the movement (`account`) is closed; or a state change of a closed account.
    AccountClosed,
    /// A close of an account with a balance or holds (`balance`, `held`).
    AccountNotEmpty,
    /// The credit would take `account` above its ceiling, which `available` carries.
    BalanceLimitExceeded,
    /// Limits the account's current state already breaks.
    LimitBreached,
    /// No transfer has this id.
    TransferNotFound,
    /// A reversal of more than is left (`available`).
    ReversalExceedsOriginal,
    /// A partial reversal of a posting of more than two legs.
    PartialPosting,
}

impl Outcome {
    const ALL: [Outcome; 20] = [
        Outcome::Ok,
        Outcome::Replayed,
        Outcome::IdempotencyConflict,
        Outcome::AccountNotFound,
        Outcome::CurrencyMismatch,
        Outcome::InvalidScale,
        Outcome::InsufficientFunds,
        Outcome::Overflow,
        Outcome::Unbalanced,
        Outcome::HoldNotFound,
        Outcome::HoldNotPending,
        Outcome::ExceedsHold,
        Outcome::AccountFrozen,
        Outcome::AccountClosed,
        Outcome::AccountNotEmpty,
        Outcome::BalanceLimitExceeded,
        Outcome::LimitBreached,
        Outcome::TransferNotFound,
        Outcome::ReversalExceedsOriginal,
        Outcome::PartialPosting,
    ];

    /// The name the SQL functions use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Replayed => "replayed",
            Outcome::IdempotencyConflict => "idempotency_conflict",
            Outcome::AccountNotFound => "account_not_found",
            Outcome::CurrencyMismatch => "currency_mismatch",
            Outcome::InvalidScale => "invalid_scale",
            Outcome::InsufficientFunds => "insufficient_funds",
            Outcome::Overflow => "overflow",
            Outcome::Unbalanced => "unbalanced",
            Outcome::HoldNotFound => "hold_not_found",
            Outcome::HoldNotPending => "hold_not_pending",
            Outcome::ExceedsHold => "exceeds_hold",
            Outcome::AccountFrozen => "account_frozen",
            Outcome::AccountClosed => "account_closed",
            Outcome::AccountNotEmpty => "account_not_empty",
            Outcome::BalanceLimitExceeded => "balance_limit_exceeded",
            Outcome::LimitBreached => "limit_breached",
            Outcome::TransferNotFound => "transfer_not_found",
            Outcome::ReversalExceedsOriginal => "reversal_exceeds_original",
            Outcome::PartialPosting => "partial_posting",
        }
    }

    /// The outcome named `name`, if the library knows it.
    pub(crate) fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// One answer row of a ledger function, read column by column. Every read is checked: a column
/// that is missing, NULL where a value is required, or of another type is
/// [`LedgerError::UnexpectedRow`] naming the function.
#[derive(Clone, Copy)]
pub(crate) struct Reply<'a> {
    row: &'a Row,
    function: &'static str,
}

impl<'a> Reply<'a> {
    pub(crate) fn new(row: &'a Row, function: &'static str) -> Self {
        Reply { row, function }
    }

    /// Column `name` as `T` (an `Option<T>` accepts NULL).
    pub(crate) fn get<T: FromSql<'a>>(&self, name: &str) -> Result<T, LedgerError> {
        self.row.try_get(name).map_err(|e| self.malformed(format!("column {name}: {e}")))
    }

    /// The first column as `T`: the answer of a function that returns one value.
    pub(crate) fn first<T: FromSql<'a>>(&self) -> Result<T, LedgerError> {
        self.at(0)
    }

    /// Column number `index` (from 0) as `T`.
    pub(crate) fn at<T: FromSql<'a>>(&self, index: usize) -> Result<T, LedgerError> {
        self.row.try_get(index).map_err(|e| self.malformed(format!("column {index}: {e}")))
    }

    /// The `outcome` column, which must name an outcome the library knows.
    pub(crate) fn outcome(&self) -> Result<Outcome, LedgerError> {
        let name: &str = self.get("outcome")?;
        Outcome::parse(name).ok_or_else(|| self.malformed(format!("unknown outcome {name:?}")))
    }

    /// An outcome the library knows, but not as an answer of this function.
    pub(crate) fn misplaced(&self, outcome: Outcome) -> LedgerError {
        self.malformed(format!("outcome {:?} is not one this function gives", outcome.as_str()))
    }

    /// The row is not what the protocol says.
    pub(crate) fn malformed(&self, detail: String) -> LedgerError {
        unexpected(self.function, detail)
    }
}

/// The refusals every money-moving function shares for the account rules (migration 7):
/// `account_frozen`, `account_closed` (both naming `account`) and `balance_limit_exceeded`
/// (`account`, with its ceiling in `available`). Any other outcome is misplaced here: the
/// caller's decoder handles the outcomes of its own function first.
pub(crate) fn account_rule(reply: &Reply<'_>, outcome: Outcome, requested: Decimal) -> LedgerError {
    let decoded = || -> Result<LedgerError, LedgerError> {
        let account = AccountId(reply.get("account")?);
        Ok(match outcome {
            Outcome::AccountFrozen => LedgerError::AccountFrozen { account },
            Outcome::AccountClosed => LedgerError::AccountClosed { account },
            Outcome::BalanceLimitExceeded => {
                LedgerError::BalanceLimitExceeded { account, max_balance: reply.get("available")?, requested }
            }
            other => reply.misplaced(other),
        })
    };
    match outcome {
        Outcome::AccountFrozen | Outcome::AccountClosed | Outcome::BalanceLimitExceeded => {
            decoded().unwrap_or_else(|e| e)
        }
        other => reply.misplaced(other),
    }
}

/// [`LedgerError::UnexpectedRow`] for `function`.
pub(crate) fn unexpected(function: &'static str, detail: impl Into<String>) -> LedgerError {
    LedgerError::UnexpectedRow { function, detail: detail.into() }
}

/// Whether a row answers with a request committed earlier (`outcome = 'replayed'`). A row
/// without a readable outcome is not a replay; its decoder reports it.
pub(crate) fn is_replay(row: &Row) -> bool {
    row.try_get::<_, &str>("outcome").is_ok_and(|name| name == Outcome::Replayed.as_str())
}

/// Whether a row answers with a request that holds its key now (applied or replayed).
pub(crate) fn holds_key(row: &Row) -> bool {
    row.try_get::<_, &str>("outcome")
        .is_ok_and(|name| name == Outcome::Ok.as_str() || name == Outcome::Replayed.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_outcome_name_parses_back_to_itself() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("OK"), None);
        assert_eq!(Outcome::parse(""), None);
    }

    #[test]
    fn lock_params_name_the_functions_modes() {
        assert_eq!(lock_params(LockWait::Block), (0, 0));
        assert_eq!(lock_params(LockWait::NoWait), (1, 0));
        assert_eq!(lock_params(LockWait::Timeout(Duration::from_micros(1))), (2, 1));
        assert_eq!(lock_params(LockWait::Timeout(Duration::from_millis(250))), (2, 250));
    }
}

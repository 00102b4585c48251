//! Statements: an account's movements over a period, with the balances around it.

use std::time::SystemTime;

use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::values::AccountId;

/// An account's movements over the period `(from, to]`: the balance at `from`, the balance at
/// `to`, and what entered and left in between, all read from one snapshot, so
/// `opening_balance + total_credits - total_debits == closing_balance` always holds.
/// [`Ledger::statement`](crate::Ledger::statement) makes one.
///
/// An entry belongs to the period when its time (taken after its account's lock, see
/// [`Entry::created_at`](crate::Entry::created_at)) is after `from` and at or before `to`:
/// `opening_balance` is [`Ledger::balance_at`](crate::Ledger::balance_at)`(from)` and
/// `closing_balance` is `balance_at(to)`, so consecutive statements chain without a gap or an
/// overlap.
///
/// ```
/// use wallet_ledger::Statement;
/// # fn check(statement: &Statement) {
/// assert_eq!(statement.opening_balance + statement.total_credits - statement.total_debits,
///            statement.closing_balance);
/// # }
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Statement {
    /// The account.
    pub account: AccountId,
    /// The start of the period (exclusive).
    pub from: SystemTime,
    /// The end of the period (inclusive).
    pub to: SystemTime,
    /// The balance after the last entry at or before `from` (zero before the first entry).
    pub opening_balance: Decimal,
    /// The balance after the last entry at or before `to`.
    pub closing_balance: Decimal,
    /// The sum of the period's debits, as a positive amount.
    pub total_debits: Decimal,
    /// The sum of the period's credits.
    pub total_credits: Decimal,
    /// How many entries the period has.
    pub entry_count: u64,
}

/// A period must not end before it starts.
pub(crate) fn check_period(from: SystemTime, to: SystemTime) -> Result<(), LedgerError> {
    if to < from {
        return Err(LedgerError::InvalidInput { field: "to", reason: "the period ends before it starts".into() });
    }
    Ok(())
}

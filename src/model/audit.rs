//! The audit's findings: what a check of every ledger invariant reports.

use std::fmt;

use rust_decimal::Decimal;

use crate::values::{AccountId, TransferId};

/// One broken invariant, with what was expected and what was found.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A currency's balances do not sum to zero: money was created or destroyed.
    Conservation {
        /// The currency.
        currency: String,
        /// What the balances should sum to (zero).
        expected: Decimal,
        /// What they sum to.
        actual: Decimal,
    },
    /// An account's balance differs from the sum of its entries.
    BalanceMismatch {
        /// The account.
        account: AccountId,
        /// The sum of its entries.
        expected: Decimal,
        /// Its stored balance.
        actual: Decimal,
    },
    /// An account's version differs from the number of its entries.
    VersionMismatch {
        /// The account.
        account: AccountId,
        /// The number of its entries.
        expected: i64,
        /// Its stored version.
        actual: i64,
    },
    /// An account's entries do not form an unbroken chain: a version is missing or repeated, or
    /// a `balance_after` is not the previous one plus the amount.
    ChainBroken {
        /// The account.
        account: AccountId,
        /// The version of the offending entry.
        version: i64,
        /// Its position in the chain (what the version should be).
        position: i64,
        /// Previous balance_after plus this amount.
        expected: Decimal,
        /// The stored balance_after.
        actual: Decimal,
    },
    /// A transfer does not have exactly its two legs (−amount on the debited account, +amount on
    /// the credited one, same currency).
    TransferLegs {
        /// The transfer.
        transfer: TransferId,
        /// How many entries it has.
        legs: i64,
        /// What they sum to (should be zero).
        sum: Decimal,
    },
    /// A posting (a transfer with N legs, see [`Posting`](crate::Posting)) whose legs in a
    /// currency do not sum to zero, or that has fewer than two legs, two legs on one account, or
    /// an amount other than the sum of its credits.
    PostingLegs {
        /// The posting's transfer.
        transfer: TransferId,
        /// The currency whose legs are listed (`None`: the posting has no legs at all).
        currency: Option<String>,
        /// Its legs in that currency.
        legs: i64,
        /// What they sum to (should be zero).
        sum: Decimal,
    },
    /// A bounded account's available balance (balance minus held) is below its floor.
    FloorBroken {
        /// The account.
        account: AccountId,
        /// Its floor.
        floor: Decimal,
        /// Its available balance.
        balance: Decimal,
    },
    /// A closed account with a balance or holds.
    ClosedNotEmpty {
        /// The account.
        account: AccountId,
        /// Its balance.
        balance: Decimal,
        /// What it holds for pending holds.
        held: Decimal,
    },
    /// A balance above its account's ceiling (`max_balance`).
    CeilingBroken {
        /// The account.
        account: AccountId,
        /// Its ceiling.
        ceiling: Decimal,
        /// Its balance.
        balance: Decimal,
    },
    /// A transfer reversed beyond its amount, or whose recorded `reversed` differs from the sum
    /// of the reversals pointing at it.
    OverReversed {
        /// The transfer.
        transfer: TransferId,
        /// Its amount.
        amount: Decimal,
        /// What it records as reversed.
        reversed: Decimal,
        /// The sum of the reversals pointing at it.
        reversals: Decimal,
    },
    /// A reversal that does not point at an existing transfer between the same accounts in the
    /// other direction.
    ReversalMismatch {
        /// The reversal.
        reversal: TransferId,
        /// The transfer it names.
        transfer: TransferId,
    },
    /// An account's `held` differs from the sum of its pending holds.
    HeldMismatch {
        /// The account.
        account: AccountId,
        /// The sum of its pending holds.
        expected: Decimal,
        /// Its stored `held`.
        actual: Decimal,
    },
    /// A row that points at a row that does not exist: the ledger's functions never write one,
    /// and the write guard refuses one from anybody else, so it was written past the guard on
    /// purpose (triggers switched off by a superuser, for example).
    DanglingReference {
        /// The table of the row: `entries`, `transfers`, `holds` or `hold_events`.
        table: String,
        /// The row's id.
        row: i64,
        /// The column that points nowhere, e.g. `account_id`.
        reference: String,
        /// The id it holds.
        missing: i64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Conservation { currency, expected, actual } => {
                write!(f, "conservation: {currency} balances sum to {actual}, expected {expected}")
            }
            Violation::BalanceMismatch { account, expected, actual } => {
                write!(f, "balance: account {account} holds {actual}, its entries sum to {expected}")
            }
            Violation::VersionMismatch { account, expected, actual } => {
                write!(f, "version: account {account} is at version {actual}, it has {expected} entries")
            }
            Violation::ChainBroken { account, version, position, expected, actual } => write!(
                f,
                "chain: account {account} entry version {version} at position {position} has balance_after {actual}, expected {expected}"
            ),
            Violation::TransferLegs { transfer, legs, sum } => {
                write!(f, "legs: transfer {transfer} has {legs} legs summing to {sum}")
            }
            Violation::PostingLegs { transfer, currency, legs, sum } => write!(
                f,
                "posting: transfer {transfer} has {legs} legs in {} summing to {sum} (or its legs or amount are malformed)",
                currency.as_deref().unwrap_or("no currency")
            ),
            Violation::FloorBroken { account, floor, balance } => {
                write!(f, "floor: account {account} has {balance} available, below its floor {floor}")
            }
            Violation::ClosedNotEmpty { account, balance, held } => {
                write!(f, "closed: account {account} is closed with balance {balance} and {held} held")
            }
            Violation::CeilingBroken { account, ceiling, balance } => {
                write!(f, "ceiling: account {account} has balance {balance}, above its max balance {ceiling}")
            }
            Violation::OverReversed { transfer, amount, reversed, reversals } => write!(
                f,
                "reversed: transfer {transfer} of {amount} records {reversed} reversed, its reversals sum to {reversals}"
            ),
            Violation::ReversalMismatch { reversal, transfer } => write!(
                f,
                "reversal: transfer {reversal} reverses {transfer}, which is missing or not the same accounts the other way"
            ),
            Violation::HeldMismatch { account, expected, actual } => {
                write!(f, "held: account {account} holds {actual} for holds, its pending holds sum to {expected}")
            }
            Violation::DanglingReference { table, row, reference, missing } => {
                write!(f, "reference: {table} row {row} has {reference} {missing}, which does not exist")
            }
        }
    }
}

/// The result of [`Ledger::verify`](crate::Ledger::verify).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Audit {
    /// Every violation found (at most 10,000 per check; see `truncated`).
    pub violations: Vec<Violation>,
    /// Whether a check had more violations than it listed.
    pub truncated: bool,
    /// Accounts checked.
    pub accounts: i64,
    /// Transfers checked.
    pub transfers: i64,
    /// Entries checked.
    pub entries: i64,
}

impl Audit {
    /// No violation found.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

//! Time: an account's balance as of an instant, its statement over a period, and the entries
//! of a period.

use std::time::SystemTime;

use rust_decimal::Decimal;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::entry::{check_page, Entry};
use crate::model::statement::{check_period, Statement};
use crate::plan::{params, try_plan, Plan, Sql};
use crate::protocol::{self, reads, Reply};
use crate::values::{AccountId, EntryId};

impl Ledger {
    /// The account's balance at `instant`: after its last entry at or before it (each entry's
    /// time is taken after its account's lock, [`Entry::created_at`]); zero before its first
    /// entry. One index probe; a read, takes no lock.
    ///
    /// An entry's time is taken before its transaction commits, so the answer for a moment
    /// a few milliseconds ago can still change when an in-flight transfer commits; for an
    /// instant before every open transaction began it is final.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::SystemTime;
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{Ledger, NewAccount, Transfer};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("balance_at_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    /// let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// let before = SystemTime::now();
    /// ledger.transfer(&Transfer::new(issuer, alice, dec!(10.00)))?;
    /// assert_eq!(ledger.balance_at(alice, before)?, dec!(0));
    /// assert_eq!(ledger.balance_at(alice, SystemTime::now())?, dec!(10.00));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`].
    pub fn balance_at(&self, account: AccountId, instant: SystemTime) -> Result<Decimal, LedgerError> {
        self.run(balance_at_plan(account, instant))
    }

    /// The account's statement for the period `(from, to]`: opening and closing balances
    /// ([`balance_at`](Self::balance_at) `from` and `to`), total debits and credits, and the
    /// number of entries, all from one snapshot, so `opening + credits - debits = closing`.
    /// [`history_between`](Self::history_between) lists the entries. A read: takes no lock.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::{Duration, SystemTime};
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{Ledger, NewAccount, Transfer};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("statement_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    /// let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// ledger.transfer(&Transfer::new(issuer, alice, dec!(10.00)))?;
    /// let from = SystemTime::now();
    /// ledger.transfer(&Transfer::new(issuer, alice, dec!(5.00)))?;
    /// ledger.transfer(&Transfer::new(alice, issuer, dec!(2.00)))?;
    /// let to = SystemTime::now() + Duration::from_secs(1);
    ///
    /// let statement = ledger.statement(alice, from, to)?;
    /// assert_eq!(statement.opening_balance, dec!(10.00));
    /// assert_eq!((statement.total_credits, statement.total_debits), (dec!(5.00), dec!(2.00)));
    /// assert_eq!(statement.closing_balance, dec!(13.00));
    /// assert_eq!(statement.entry_count, 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`]; [`LedgerError::InvalidInput`] when `to` is before `from`.
    pub fn statement(&self, account: AccountId, from: SystemTime, to: SystemTime) -> Result<Statement, LedgerError> {
        self.run(statement_plan(account, from, to))
    }

    /// The account's entries of the period `(from, to]` (the entries of its
    /// [`statement`](Self::statement)), oldest first: up to `limit` of them after the entry
    /// `after` (from the period's first when `None`). Pass the last entry's id as `after` for
    /// the next page; a page shorter than `limit` is the last. A read: takes no lock.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::{Duration, SystemTime};
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{Ledger, NewAccount, Transfer};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("history_between_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    /// let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// let from = SystemTime::now() - Duration::from_secs(1);
    /// for cents in [100, 200, 300] {
    ///     ledger.transfer(&Transfer::new(issuer, alice, rust_decimal::Decimal::new(cents, 2)))?;
    /// }
    /// let to = SystemTime::now() + Duration::from_secs(1);
    /// let first = ledger.history_between(alice, from, to, None, 2)?;
    /// let rest = ledger.history_between(alice, from, to, first.last().map(|e| e.id), 2)?;
    /// let amounts: Vec<_> = first.iter().chain(&rest).map(|e| e.amount).collect();
    /// assert_eq!(amounts, vec![dec!(1.00), dec!(2.00), dec!(3.00)]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`]; [`LedgerError::InvalidInput`] when `to` is before
    /// `from`, `limit` is 0 or above [`HISTORY_PAGE_MAX`](crate::limits::HISTORY_PAGE_MAX), or
    /// `after` is not an entry of this account.
    pub fn history_between(
        &self,
        account: AccountId,
        from: SystemTime,
        to: SystemTime,
        after: Option<EntryId>,
        limit: u32,
    ) -> Result<Vec<Entry>, LedgerError> {
        self.run(history_between_plan(account, from, to, after, limit))
    }
}

/// An account's balance as of an instant: one read.
pub(crate) fn balance_at_plan(account: AccountId, instant: SystemTime) -> Plan<Decimal> {
    Plan::read_one(Sql::new(reads::BALANCE_AT, params![account.0, instant]), move |row| {
        Plan::done(reads::balance_at(&row).and_then(|balance| balance.ok_or(LedgerError::AccountNotFound { account })))
    })
}

/// An account's statement of a period: one read, one snapshot.
pub(crate) fn statement_plan(account: AccountId, from: SystemTime, to: SystemTime) -> Plan<Statement> {
    try_plan!(check_period(from, to));
    Plan::read_one(Sql::new(reads::STATEMENT, params![account.0, from, to]), move |row| {
        Plan::done(
            reads::statement(&row, account, from, to)
                .and_then(|statement| statement.ok_or(LedgerError::AccountNotFound { account })),
        )
    })
}

/// A page of an account's entries of a period: the cursor entry's time read first (when there
/// is one), then the page; an empty first page asks whether the account exists.
pub(crate) fn history_between_plan(
    account: AccountId,
    from: SystemTime,
    to: SystemTime,
    after: Option<EntryId>,
    limit: u32,
) -> Plan<Vec<Entry>> {
    try_plan!(check_period(from, to));
    try_plan!(check_page(limit));
    let page = move |cursor_time: Option<SystemTime>| {
        // After the period's start and after the cursor entry: one row bound (see lower_bound).
        let (lower_time, lower_id) = match (cursor_time, after) {
            (Some(time), Some(entry)) if (time, entry.0) > (from, i64::MAX) => (time, entry.0),
            _ => (from, i64::MAX),
        };
        let sql = Sql::new(reads::HISTORY_BETWEEN, params![account.0, lower_time, lower_id, to, i64::from(limit)]);
        Plan::read(sql, move |rows| {
            if rows.is_empty() && after.is_none() {
                // tells "no such account" apart from "no entries then"
                return crate::ops::accounts::account_plan(account).map(|_| Vec::new());
            }
            Plan::done(rows.iter().map(protocol::rows::entry).collect())
        })
    };
    match after {
        None => page(None),
        Some(entry) => Plan::read_opt(Sql::new(reads::ENTRY_TIME, params![entry.0, account.0]), move |row| match row {
            Some(row) => page(Some(try_plan!(Reply::new(&row, "history_between").first()))),
            None => Plan::fail(LedgerError::InvalidInput {
                field: "after",
                reason: format!("entry {entry} is not an entry of account {account}"),
            }),
        }),
    }
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::balance_at`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::balance_at`].
    pub async fn balance_at(&self, account: AccountId, instant: SystemTime) -> Result<Decimal, LedgerError> {
        self.run(balance_at_plan(account, instant)).await
    }

    /// [`Ledger::statement`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::statement`].
    pub async fn statement(
        &self,
        account: AccountId,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Statement, LedgerError> {
        self.run(statement_plan(account, from, to)).await
    }

    /// [`Ledger::history_between`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::history_between`].
    pub async fn history_between(
        &self,
        account: AccountId,
        from: SystemTime,
        to: SystemTime,
        after: Option<EntryId>,
        limit: u32,
    ) -> Result<Vec<Entry>, LedgerError> {
        self.run(history_between_plan(account, from, to, after, limit)).await
    }
}

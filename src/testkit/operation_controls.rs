//! Deliberately broken account rules, so that the checks of issue 16's rules can be shown to
//! catch a real bug: each control does what a backend bolting the rule on outside the ledger's
//! locked call would do.
//!
//! - [`OperationControl::ReversalUnlocked`]: a reversal that reads what is left to reverse
//!   without locking the original transfer, moves the money with an ordinary transfer, and then
//!   writes the new reversed total computed from its read. Two such reversals racing both see
//!   the same remainder: together they reverse more than the transfer (and one total overwrites
//!   the other). The audit's `reversed` check finds it.
//! - [`OperationControl::FreezeCheckedBeforeLock`]: a transfer that reads the payer's status
//!   without a lock, then moves the money with correct ordered locks but no status check (the
//!   testkit's [`Control::MultiStatement`]). A freeze that commits between the read and the lock
//!   does not stop it: a debit after the freeze. The window is widened by a short sleep so that
//!   a test sees it within a few freezes.
//!
//! [`OperationControl::Ledger`] runs the library's own [`Ledger::reverse`] and
//! [`Ledger::transfer`].

use std::time::Duration;

use crate::testkit::controls::Control;
use crate::{Ledger, LedgerError, Receipt, Reversal, Transfer};

/// Which implementation of the account rules to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationControl {
    /// The library's own calls: the implementation under test, not broken.
    Ledger,
    /// A reversal that checks the remaining amount without locking the original.
    ReversalUnlocked,
    /// A transfer that checks its payer's status before taking the row locks.
    FreezeCheckedBeforeLock,
}

/// How long the broken controls wait between their unlocked read and the write it decides.
const WINDOW: Duration = Duration::from_millis(2);

impl OperationControl {
    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            OperationControl::Ledger => "ledger",
            OperationControl::ReversalUnlocked => "reversal-unlocked",
            OperationControl::FreezeCheckedBeforeLock => "freeze-checked-before-lock",
        }
    }

    /// Reverses as this implementation does ([`Ledger::reverse`] unless broken). Idempotency
    /// keys and memos are ignored by the broken one.
    pub fn reverse(self, ledger: &Ledger, r: &Reversal) -> Result<Receipt, LedgerError> {
        if self != OperationControl::ReversalUnlocked {
            return ledger.reverse(r);
        }
        let mut conn = ledger.connection()?;
        let read =
            conn.sql("SELECT from_account, to_account, amount, reversed FROM wallet_ledger.transfers WHERE id = $1");
        let row = conn
            .client()
            .query_opt(read.as_ref(), &[&r.transfer.0])?
            .ok_or(LedgerError::TransferNotFound { transfer: r.transfer })?;
        let (from, to): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let (amount, reversed): (rust_decimal::Decimal, rust_decimal::Decimal) = (row.try_get(2)?, row.try_get(3)?);
        let reversible = amount - reversed;
        let wanted = r.amount.unwrap_or(reversible);
        if reversible.is_zero() || wanted > reversible {
            return Err(LedgerError::ReversalExceedsOriginal { transfer: r.transfer, reversible });
        }
        std::thread::sleep(WINDOW);
        let receipt = ledger.transfer(&Transfer::new(crate::AccountId(to), crate::AccountId(from), wanted))?;
        let mark = conn.sql("UPDATE wallet_ledger.transfers SET reverses = $2 WHERE id = $1");
        conn.client().execute(mark.as_ref(), &[&receipt.transfer_id.0, &r.transfer.0])?;
        let total = conn.sql("UPDATE wallet_ledger.transfers SET reversed = $2 WHERE id = $1");
        conn.client().execute(total.as_ref(), &[&r.transfer.0, &(reversed + wanted)])?;
        Ok(receipt)
    }

    /// Transfers as this implementation does ([`Ledger::transfer`] unless broken).
    pub fn transfer(self, ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
        if self != OperationControl::FreezeCheckedBeforeLock {
            return ledger.transfer(t);
        }
        let status = {
            let mut conn = ledger.connection()?;
            let read = conn.sql("SELECT status FROM wallet_ledger.accounts WHERE id = $1");
            let row = conn.client().query_one(read.as_ref(), &[&t.from.0])?;
            row.try_get::<_, String>(0)?
        };
        if status != "open" {
            return Err(LedgerError::AccountFrozen { account: t.from });
        }
        std::thread::sleep(WINDOW);
        Control::MultiStatement.transfer(ledger, t)
    }
}

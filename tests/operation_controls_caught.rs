//! The checks of the account rules must be able to fail: the same races that the ledger passes
//! (tests/reversals.rs, tests/account_states.rs) are caught when run against the deliberately
//! broken controls of `testkit::operation_controls`: a reversal that checks the remaining
//! amount without locking the original reverses more than the transfer (the audit's `reversed`
//! check names it), and a transfer that checks its payer's status before the lock debits a
//! frozen account.
#![cfg(feature = "testkit")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::funded;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::testkit::operation_controls::OperationControl;
use wallet_ledger::{Ledger, LedgerError, Reversal, Transfer, Violation};

/// 8 threads reverse one transfer of 10.00 in parts of 0.75 through `control`. Returns the sum
/// of the reversals that went through, and whether the audit names the transfer over-reversed.
fn reversal_race(l: &Ledger, control: OperationControl, w: &[wallet_ledger::AccountId]) -> Result<(Decimal, bool)> {
    let paid = l.transfer(&Transfer::new(w[0], w[1], dec!(10.00)))?.transfer_id;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || -> Result<Decimal> {
                let mut reversed = Decimal::ZERO;
                for _ in 0..5 {
                    match control.reverse(&l, &Reversal::of(paid).amount(dec!(0.75))) {
                        Ok(r) => reversed += r.amount,
                        Err(LedgerError::ReversalExceedsOriginal { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(reversed)
            })
        })
        .collect();
    let mut total = Decimal::ZERO;
    for t in threads {
        total += t.join().expect("thread")?;
    }
    let audit = l.verify()?;
    let caught =
        audit.violations.iter().any(|v| matches!(v, Violation::OverReversed { transfer, .. } if *transfer == paid));
    Ok((total, caught))
}

#[test]
fn a_reversal_without_the_originals_lock_is_caught() -> Result<()> {
    let (l, _, _, w) = funded("control_reversal", 2, dec!(1000.00))?;
    let (total, caught) = reversal_race(&l, OperationControl::Ledger, &w)?;
    assert!(total <= dec!(10.00) && !caught, "the ledger itself: {total} reversed");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (total, caught) = reversal_race(&l, OperationControl::ReversalUnlocked, &w)?;
        if caught {
            assert!(total > dec!(10.00), "caught with {total} reversed");
            return Ok(());
        }
        assert!(Instant::now() < deadline, "the unlocked reversal was never caught");
    }
}

/// Threads debit `suspect` through `control` while the main thread freezes and unfreezes it
/// `rounds` times; after each freeze returns, the account's version must not move until the
/// unfreeze. Returns how many debits landed while it was frozen.
fn freeze_race(l: &Ledger, control: OperationControl, w: &[wallet_ledger::AccountId], rounds: usize) -> Result<usize> {
    let suspect = w[0];
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (l, stop, to) = (l.clone(), stop.clone(), w[1 + i % 3]);
            std::thread::spawn(move || -> Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    match control.transfer(&l, &Transfer::new(suspect, to, dec!(0.01))) {
                        Ok(_) | Err(LedgerError::AccountFrozen { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })
        })
        .collect();
    let mut while_frozen = 0;
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(30));
        let frozen = l.freeze(suspect)?;
        std::thread::sleep(Duration::from_millis(30));
        let after = l.account(suspect)?;
        while_frozen += usize::try_from(after.version - frozen.version)?;
        l.unfreeze(suspect)?;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("thread")?;
    }
    Ok(while_frozen)
}

#[test]
fn a_freeze_checked_before_the_lock_is_caught() -> Result<()> {
    let (l, _, _, w) = funded("control_freeze", 4, dec!(100000.00))?;
    assert_eq!(freeze_race(&l, OperationControl::Ledger, &w, 10)?, 0, "the ledger itself debited a frozen account");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if freeze_race(&l, OperationControl::FreezeCheckedBeforeLock, &w, 10)? > 0 {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "the freeze checked before the lock was never caught");
    }
}

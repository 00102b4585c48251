//! Multi-leg postings: all legs or none, balanced per currency, floors, idempotency, the audit,
//! the caller's-transaction form, and concurrency on real threads.

#[macro_use]
mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use anyhow::Result;
use common::{deadlocks, funded, snapshot};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{AccountId, KeyHolder, LedgerError, NewAccount, Posting, Transfer, Violation};

#[test]
fn a_split_payment_moves_every_leg_at_once() -> Result<()> {
    let (l, _, issuer, w) = funded("post_split", 4, dec!(0))?;
    let (buyer, merchant, fees, tax) = (w[0], w[1], w[2], w[3]);
    l.transfer(&Transfer::new(issuer, buyer, dec!(150.00)))?;
    let posting = Posting::new()
        .leg(buyer, dec!(-100.00))
        .leg(merchant, dec!(95.00))
        .leg(fees, dec!(3.00))
        .leg(tax, dec!(2.00))
        .memo("order 1");
    let r = l.post(&posting)?;
    assert!(!r.replayed);
    assert_eq!(r.balances, vec![(buyer, dec!(50.00)), (merchant, dec!(95.00)), (fees, dec!(3.00)), (tax, dec!(2.00))]);
    for (account, balance) in &r.balances {
        assert_eq!(l.balance(*account)?, *balance);
    }
    let history = l.history(buyer, None, 10)?;
    let last = history.last().expect("entries");
    assert_eq!((last.transfer_id, last.amount, last.counterparty), (r.transfer_id, dec!(-100.00), None));
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{:?}", audit.violations);
    Ok(())
}

#[test]
fn refusals_change_nothing() -> Result<()> {
    let (l, _, issuer, w) = funded("post_refusals", 3, dec!(10.00))?;
    refused!(
        l,
        l.post(&Posting::new().leg(w[0], dec!(-5.00)).leg(w[1], dec!(4.00))),
        LedgerError::Unbalanced { ref currency, sum } if currency == "USD" && sum == dec!(-1.00)
    );
    // One leg breaking its floor refuses the whole posting.
    refused!(
        l,
        l.post(&Posting::new().leg(w[0], dec!(-5.00)).leg(w[1], dec!(-11.00)).leg(w[2], dec!(16.00))),
        LedgerError::InsufficientFunds { account, available, requested }
            if account == w[1] && available == dec!(10.00) && requested == dec!(11.00)
    );
    refused!(
        l,
        l.post(&Posting::new().leg(w[0], dec!(-1)).leg(w[0], dec!(1))),
        LedgerError::InvalidInput { field: "posting legs", .. }
    );
    refused!(l, l.post(&Posting::new().leg(w[0], dec!(-1))), LedgerError::InvalidInput { .. });
    refused!(l, l.post(&Posting::new().leg(w[0], dec!(0)).leg(w[1], dec!(0))), LedgerError::InvalidAmount { .. });
    refused!(
        l,
        l.post(&Posting::new().leg(w[0], dec!(-0.001)).leg(w[1], dec!(0.001))),
        LedgerError::InvalidAmount { .. }
    );
    let ghost = AccountId(987_654);
    refused!(
        l,
        l.post(&Posting::new().leg(w[0], dec!(-1)).leg(ghost, dec!(1))),
        LedgerError::AccountNotFound { account } if account == ghost
    );
    // An unbounded issuer may go below zero: that is how money enters.
    l.post(&Posting::new().leg(issuer, dec!(-7.00)).leg(w[0], dec!(7.00)))?;
    assert_eq!(l.balance(w[0])?, dec!(17.00));
    Ok(())
}

#[test]
fn legs_balance_per_currency() -> Result<()> {
    let (l, _, usd_issuer, w) = funded("post_fx", 2, dec!(100.00))?;
    l.define_currency("EUR", 2)?;
    let eur_issuer = l.open_account(&NewAccount::new("EUR").unbounded())?.id;
    let eur_desk = l.open_account(&NewAccount::new("EUR"))?.id;
    l.transfer(&Transfer::new(eur_issuer, eur_desk, dec!(500.00)))?;
    let eur_wallet = l.open_account(&NewAccount::new("EUR"))?.id;
    // An exchange: 10 USD from w0 to the USD issuer (as desk), 9 EUR from the desk to a wallet.
    let fx = Posting::new()
        .leg(w[0], dec!(-10.00))
        .leg(usd_issuer, dec!(10.00))
        .leg(eur_desk, dec!(-9.00))
        .leg(eur_wallet, dec!(9.00));
    l.post(&fx)?;
    refused!(
        l,
        l.post(&Posting::new().leg(w[0], dec!(-10.00)).leg(eur_wallet, dec!(10.00))),
        LedgerError::Unbalanced { .. }
    );
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn keys_replay_and_conflict() -> Result<()> {
    let (l, _, _, w) = funded("post_keys", 3, dec!(10.00))?;
    let p = Posting::new().leg(w[0], dec!(-3.00)).leg(w[1], dec!(2.00)).leg(w[2], dec!(1.00)).idempotency_key("p1");
    let first = l.post(&p)?;
    let before = snapshot(&l)?;
    let again = l.post(&p)?;
    assert!(again.replayed);
    assert_eq!((again.transfer_id, &again.balances), (first.transfer_id, &first.balances));
    // The same legs in another order are the same posting.
    let reordered =
        Posting::new().leg(w[2], dec!(1.00)).leg(w[0], dec!(-3.00)).leg(w[1], dec!(2.00)).idempotency_key("p1");
    let r = l.post(&reordered)?;
    assert!(r.replayed && r.balances[0] == (w[2], dec!(11.00)));
    assert_eq!(before, snapshot(&l)?);
    let other = Posting::new().leg(w[0], dec!(-3.00)).leg(w[1], dec!(3.00)).idempotency_key("p1");
    refused!(
        l,
        l.post(&other),
        LedgerError::IdempotencyConflict { existing, .. } if existing == KeyHolder::Transfer(first.transfer_id)
    );
    // Postings and transfers share one key space.
    let t = l.transfer(&Transfer::new(w[0], w[1], dec!(1)).idempotency_key("t1"))?;
    refused!(
        l,
        l.post(&Posting::new().leg(w[0], dec!(-1)).leg(w[1], dec!(1)).idempotency_key("t1")),
        LedgerError::IdempotencyConflict { existing, .. } if existing == KeyHolder::Transfer(t.transfer_id)
    );
    refused!(
        l,
        l.transfer(&Transfer::new(w[0], w[1], dec!(3.00)).idempotency_key("p1")),
        LedgerError::IdempotencyConflict { .. }
    );
    let batch = l.transfer_batch(&[Transfer::new(w[0], w[1], dec!(3.00)).idempotency_key("p1")])?;
    assert!(matches!(batch[0], Err(LedgerError::IdempotencyConflict { .. })), "{:?}", batch[0]);
    Ok(())
}

#[test]
fn in_the_callers_transaction() -> Result<()> {
    let (l, url, _, w) = funded("post_in", 3, dec!(10.00))?;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let before = snapshot(&l)?;
    let p = Posting::new().leg(w[0], dec!(-4)).leg(w[1], dec!(3)).leg(w[2], dec!(1));
    let mut tx = client.transaction()?;
    l.post_in(&mut tx, &p)?;
    tx.rollback()?;
    assert_eq!(before, snapshot(&l)?);
    let mut tx = client.transaction()?;
    let refused = l.post_in(&mut tx, &Posting::new().leg(w[0], dec!(-40)).leg(w[1], dec!(40)));
    assert!(matches!(refused, Err(LedgerError::InsufficientFunds { .. })), "{refused:?}");
    let r = l.post_in(&mut tx, &p)?;
    tx.commit()?;
    assert_eq!(r.balances[0], (w[0], dec!(6.00)));
    assert_eq!(l.balance(w[0])?, dec!(6.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn the_audit_checks_postings() -> Result<()> {
    let (l, url, _, w) = funded("post_audit", 3, dec!(10.00))?;
    let r = l.post(&Posting::new().leg(w[0], dec!(-4)).leg(w[1], dec!(3)).leg(w[2], dec!(1)))?;
    assert!(l.verify()?.is_clean());
    // Tamper: one leg of the posting changes (balance kept in step, so only the legs are off).
    let mut admin = postgres::Client::connect(&url, postgres::NoTls)?;
    admin.execute(
        "UPDATE wallet_ledger.entries SET amount = amount + 1, balance_after = balance_after + 1
          WHERE transfer_id = $1 AND account_id = $2",
        &[&r.transfer_id.0, &w[2].0],
    )?;
    admin.execute("UPDATE wallet_ledger.accounts SET balance = balance + 1 WHERE id = $1", &[&w[2].0])?;
    let audit = l.verify()?;
    assert!(
        audit.violations.iter().any(|v| matches!(v, Violation::PostingLegs { transfer, sum, .. }
            if *transfer == r.transfer_id && *sum == dec!(1))),
        "{:?}",
        audit.violations
    );
    Ok(())
}

/// Postings over overlapping accounts in every order, from 8 threads: no deadlock (the
/// server's counter), conservation, a clean audit.
#[test]
fn concurrent_postings_never_deadlock() -> Result<()> {
    let (l, url, issuer, w) = funded("post_concurrent", 5, dec!(1000.00))?;
    let before = deadlocks(&url)?;
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (l, w, barrier) = (l.clone(), w.clone(), barrier.clone());
            thread::spawn(move || -> Result<usize> {
                barrier.wait();
                let mut applied = 0;
                for i in 0..40 {
                    let (a, b, c) = (w[(t + i) % 5], w[(t + 2 * i + 1) % 5], w[(t + 3 * i + 2) % 5]);
                    if a == b || b == c || a == c {
                        continue;
                    }
                    let amount = Decimal::new(((t * 13 + i) % 300 + 2) as i64, 2);
                    let half = (amount / dec!(2)).round_dp(2);
                    let p = Posting::new().leg(a, -amount).leg(b, half).leg(c, amount - half);
                    applied += usize::from(l.post(&p).is_ok());
                }
                Ok(applied)
            })
        })
        .collect();
    let mut applied = 0;
    for h in handles {
        applied += h.join().expect("worker panicked")?;
    }
    assert!(applied > 50, "only {applied} applied");
    let total: Decimal = w.iter().map(|a| l.balance(*a).unwrap()).sum();
    assert_eq!(total, dec!(5000.00));
    assert_eq!(l.balance(issuer)?, dec!(-5000.00));
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{:?}", audit.violations);
    drop(l);
    assert_eq!(deadlocks(&url)?, before, "the server counted deadlocks");
    Ok(())
}

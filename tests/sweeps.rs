//! Sweeps (`Transfer::up_to_available`): the requested amount or all that is available above
//! the floor, decided on the locked balance, in every path that takes a transfer.

#[macro_use]
mod common;

use std::time::Duration;

use anyhow::Result;
use common::funded;
use rust_decimal_macros::dec;
use wallet_ledger::{CombineConfig, Hold, Ledger, LedgerError, NewAccount, Transfer};

#[test]
fn a_sweep_moves_what_is_available_and_says_so() -> Result<()> {
    let (l, _, issuer, w) = funded("sweep_single", 3, dec!(100.00))?;
    let (shop, bank) = (w[0], w[1]);
    // Enough available: the amount asked for.
    let r = l.transfer(&Transfer::new(shop, bank, dec!(30.00)).up_to_available())?;
    assert_eq!((r.amount, r.from_balance), (dec!(30.00), dec!(70.00)));
    // Less available (a hold reserves 20.00): all that is available, and the receipt says so.
    l.hold(&Hold::new(shop, w[2], dec!(20.00)))?;
    let r = l.transfer(&Transfer::new(shop, bank, dec!(1000.00)).up_to_available().idempotency_key("payout-1"))?;
    assert_eq!((r.amount, r.from_balance, r.to_balance), (dec!(50.00), dec!(20.00), dec!(180.00)));
    // The same key replays that sweep; other content under it is a conflict.
    let again = l.transfer(&Transfer::new(shop, bank, dec!(1000.00)).up_to_available().idempotency_key("payout-1"))?;
    assert!(again.replayed);
    assert_eq!((again.transfer_id, again.amount), (r.transfer_id, dec!(50.00)));
    refused!(
        l,
        l.transfer(&Transfer::new(shop, bank, dec!(10.00)).up_to_available().idempotency_key("payout-1")),
        LedgerError::IdempotencyConflict { .. }
    );
    // Nothing available: InsufficientFunds, nothing changed.
    refused!(l, l.transfer(&Transfer::new(shop, bank, dec!(1.00)).up_to_available()), LedgerError::InsufficientFunds { available, .. } if available == dec!(0));
    // A credit line is available too; an unbounded account has no limit to sweep to.
    let credit = l.open_account(&NewAccount::new("USD").min_balance(dec!(-25.00)))?.id;
    let r = l.transfer(&Transfer::new(credit, bank, dec!(40.00)).up_to_available())?;
    assert_eq!((r.amount, r.from_balance), (dec!(25.00), dec!(-25.00)));
    let r = l.transfer(&Transfer::new(issuer, bank, dec!(40.00)).up_to_available())?;
    assert_eq!(r.amount, dec!(40.00));
    // The other rules still apply: a frozen account sweeps nothing, a bad scale is refused.
    l.freeze(bank)?;
    refused!(
        l,
        l.transfer(&Transfer::new(bank, shop, dec!(1.00)).up_to_available()),
        LedgerError::AccountFrozen { .. }
    );
    refused!(
        l,
        l.transfer(&Transfer::new(w[2], shop, dec!(0.001)).up_to_available()),
        LedgerError::InvalidAmount { .. }
    );
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn sweeps_in_a_batch_see_the_earlier_items() -> Result<()> {
    let (l, _, _, w) = funded("sweep_batch", 3, dec!(100.00))?;
    let results = l.transfer_batch(&[
        Transfer::new(w[0], w[1], dec!(70.00)),
        Transfer::new(w[0], w[2], dec!(50.00)).up_to_available(),
        Transfer::new(w[0], w[2], dec!(50.00)).up_to_available(),
        Transfer::new(w[1], w[2], dec!(5.00)),
    ])?;
    assert_eq!(results[0].as_ref().map(|r| r.amount).ok(), Some(dec!(70.00)));
    assert_eq!(results[1].as_ref().map(|r| (r.amount, r.from_balance)).ok(), Some((dec!(30.00), dec!(0.00))));
    assert!(matches!(results[2], Err(LedgerError::InsufficientFunds { .. })), "{:?}", results[2]);
    assert_eq!(results[3].as_ref().map(|r| r.amount).ok(), Some(dec!(5.00)));
    // A repeat of a sweep's key inside a batch replays it.
    let results = l.transfer_batch(&[
        Transfer::new(w[2], w[0], dec!(500.00)).up_to_available().idempotency_key("sweep-b"),
        Transfer::new(w[2], w[0], dec!(500.00)).up_to_available().idempotency_key("sweep-b"),
    ])?;
    let (first, second) = (results[0].as_ref().expect("applied"), results[1].as_ref().expect("replayed"));
    assert_eq!((first.amount, second.amount, second.replayed), (dec!(135.00), dec!(135.00), true));
    // transfer_in takes sweeps too.
    let mut conn = l.connection()?;
    let mut tx = conn.client().transaction()?;
    let r = l.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(1000.00)).up_to_available())?;
    assert_eq!(r.amount, dec!(135.00));
    tx.commit()?;
    drop(conn);
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn sweeps_through_the_combiner() -> Result<()> {
    let (plain, url, _, w) = funded("sweep_combiner", 9, dec!(10.00))?;
    let l = Ledger::builder(&url)
        .pool_size(8)
        .combine(CombineConfig { max_batch: 8, max_wait: Duration::from_millis(50) })
        .build()?;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (l, from, to) = (l.clone(), w[i], w[8]);
            std::thread::spawn(move || l.transfer(&Transfer::new(from, to, dec!(25.00)).up_to_available()))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread")?.amount, dec!(10.00));
    }
    assert_eq!(plain.balance(w[8])?, dec!(90.00));
    assert!(plain.verify()?.is_clean());
    Ok(())
}

//! Reversals: partial and whole, of transfers and postings; never beyond the original, even
//! when they race; idempotent like transfers; every rule of a transfer applies.

#[macro_use]
mod common;

use anyhow::Result;
use common::{funded, snapshot};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{KeyHolder, LedgerError, Posting, Reversal, Transfer, TransferId};

#[test]
fn a_shop_refunds_in_parts_and_never_more_than_was_paid() -> Result<()> {
    let (l, _, _, w) = funded("refund_parts", 2, dec!(100.00))?;
    let (buyer, shop) = (w[0], w[1]);
    let paid = l.transfer(&Transfer::new(buyer, shop, dec!(30.00)))?.transfer_id;
    let first = l.reverse(&Reversal::of(paid).amount(dec!(10.00)).idempotency_key("refund-1").memo("damaged"))?;
    assert_eq!((first.from, first.to, first.amount), (shop, buyer, dec!(10.00)));
    assert_eq!((first.from_balance, first.to_balance), (dec!(120.00), dec!(80.00)));
    assert!(!first.replayed);
    // Same key, same content: the first receipt again; other content: a conflict.
    let again = l.reverse(&Reversal::of(paid).amount(dec!(10.00)).idempotency_key("refund-1").memo("damaged"))?;
    assert!(again.replayed);
    assert_eq!(again.transfer_id, first.transfer_id);
    let e = refused!(
        l,
        l.reverse(&Reversal::of(paid).amount(dec!(11.00)).idempotency_key("refund-1").memo("damaged")),
        LedgerError::IdempotencyConflict { .. }
    );
    assert!(
        matches!(e, LedgerError::IdempotencyConflict { existing: KeyHolder::Transfer(t), .. } if t == first.transfer_id)
    );
    // A transfer's key is not a reversal's.
    let plain = l.transfer(&Transfer::new(buyer, shop, dec!(1.00)).idempotency_key("pay-2"))?;
    refused!(l, l.reverse(&Reversal::of(paid).idempotency_key("pay-2")), LedgerError::IdempotencyConflict { .. });

    let e = refused!(l, l.reverse(&Reversal::of(paid).amount(dec!(20.01))), LedgerError::ReversalExceedsOriginal { transfer, .. } if transfer == paid);
    assert!(matches!(e, LedgerError::ReversalExceedsOriginal { reversible, .. } if reversible == dec!(20.00)));
    let rest = l.reverse(&Reversal::of(paid))?;
    assert_eq!(rest.amount, dec!(20.00));
    refused!(l, l.reverse(&Reversal::of(paid)), LedgerError::ReversalExceedsOriginal { reversible, .. } if reversible == dec!(0));
    refused!(l, l.reverse(&Reversal::of(paid).amount(dec!(0.01))), LedgerError::ReversalExceedsOriginal { .. });

    // The history shows which transfer each reversal reverses.
    let history = l.history(buyer, None, 100)?;
    let reversals: Vec<_> = history.iter().filter(|e| e.reverses == Some(paid)).map(|e| e.amount).collect();
    assert_eq!(reversals, vec![dec!(10.00), dec!(20.00)]);
    assert!(history.iter().filter(|e| e.transfer_id == plain.transfer_id).all(|e| e.reverses.is_none()));
    assert_eq!(l.balance(buyer)?, dec!(99.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn refusals_change_nothing() -> Result<()> {
    let (l, _, issuer, w) = funded("reversal_refusals", 3, dec!(100.00))?;
    let (buyer, shop, supplier) = (w[0], w[1], w[2]);
    let paid = l.transfer(&Transfer::new(buyer, shop, dec!(30.00)))?.transfer_id;
    refused!(l, l.reverse(&Reversal::of(TransferId(987_654))), LedgerError::TransferNotFound { transfer } if transfer == TransferId(987_654));
    refused!(l, l.reverse(&Reversal::of(paid).amount(dec!(0))), LedgerError::InvalidAmount { .. });
    refused!(l, l.reverse(&Reversal::of(paid).amount(dec!(-1))), LedgerError::InvalidAmount { .. });
    refused!(l, l.reverse(&Reversal::of(paid).amount(dec!(0.001))), LedgerError::InvalidAmount { .. });
    refused!(l, l.reverse(&Reversal::of(paid).idempotency_key("~reserved")), LedgerError::InvalidInput { .. });
    // The shop has paid the money out: the refund obeys its floor.
    l.transfer(&Transfer::new(shop, supplier, dec!(125.00)))?;
    let e =
        refused!(l, l.reverse(&Reversal::of(paid)), LedgerError::InsufficientFunds { account, .. } if account == shop);
    assert!(
        matches!(e, LedgerError::InsufficientFunds { available, requested, .. } if available == dec!(5.00) && requested == dec!(30.00))
    );
    // States apply: a frozen shop pays nothing back, a closed buyer receives nothing.
    l.transfer(&Transfer::new(issuer, shop, dec!(100.00)))?;
    l.freeze(shop)?;
    refused!(l, l.reverse(&Reversal::of(paid)), LedgerError::AccountFrozen { account } if account == shop);
    l.unfreeze(shop)?;
    l.transfer(&Transfer::new(buyer, issuer, dec!(70.00)))?;
    l.close(buyer)?;
    refused!(l, l.reverse(&Reversal::of(paid)), LedgerError::AccountClosed { account } if account == buyer);
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn postings_are_reversed_whole() -> Result<()> {
    let (l, _, _, w) = funded("reverse_posting", 4, dec!(100.00))?;
    let split = l.post(&Posting::new().leg(w[0], dec!(-30.00)).leg(w[1], dec!(20.00)).leg(w[2], dec!(10.00)))?;
    refused!(l, l.reverse(&Reversal::of(split.transfer_id).amount(dec!(5.00))), LedgerError::InvalidAmount { .. });
    let back = l.reverse(&Reversal::of(split.transfer_id).idempotency_key("unsplit"))?;
    assert_eq!(back.amount, dec!(30.00));
    for (account, balance) in [(w[0], dec!(100.00)), (w[1], dec!(100.00)), (w[2], dec!(100.00))] {
        assert_eq!(l.balance(account)?, balance);
    }
    assert!(l.reverse(&Reversal::of(split.transfer_id).idempotency_key("unsplit"))?.replayed);
    refused!(l, l.reverse(&Reversal::of(split.transfer_id)), LedgerError::ReversalExceedsOriginal { .. });
    // A posting of two legs may be reversed in part.
    let pair = l.post(&Posting::new().leg(w[3], dec!(-8.00)).leg(w[0], dec!(8.00)))?;
    let part = l.reverse(&Reversal::of(pair.transfer_id).amount(dec!(3.00)))?;
    assert_eq!((part.from, part.to, part.amount), (w[0], w[3], dec!(3.00)));
    assert_eq!(l.balance(w[3])?, dec!(95.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn reverse_in_commits_with_the_callers_transaction() -> Result<()> {
    let (l, url, _, w) = funded("reverse_in", 2, dec!(50.00))?;
    let paid = l.transfer(&Transfer::new(w[0], w[1], dec!(20.00)))?.transfer_id;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut tx = client.transaction()?;
    let r = l.reverse_in(&mut tx, &Reversal::of(paid).amount(dec!(5.00)))?;
    assert_eq!(r.to_balance, dec!(35.00));
    tx.rollback()?;
    assert_eq!(l.balance(w[0])?, dec!(30.00));
    let mut tx = client.transaction()?;
    let e = l.reverse_in(&mut tx, &Reversal::of(paid).amount(dec!(25.00))).unwrap_err();
    assert!(matches!(e, LedgerError::ReversalExceedsOriginal { .. }), "{e:?}");
    l.reverse_in(&mut tx, &Reversal::of(paid).amount(dec!(5.00)))?;
    tx.commit()?;
    assert_eq!(l.balance(w[0])?, dec!(35.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn the_database_refuses_a_transfer_reversed_beyond_its_amount() -> Result<()> {
    let (l, _, _, w) = funded("reversed_constraint", 2, dec!(10.00))?;
    let paid = l.transfer(&Transfer::new(w[0], w[1], dec!(4.00)))?.transfer_id;
    let mut conn = l.connection()?;
    let before = snapshot(&l)?;
    for (sql, constraint) in [
        ("UPDATE wallet_ledger.transfers SET reversed = 4.01 WHERE id = $1", "transfers_reversed"),
        ("UPDATE wallet_ledger.transfers SET reversed = -1 WHERE id = $1", "transfers_reversed"),
        ("UPDATE wallet_ledger.transfers SET reverses = id WHERE id = $1", "transfers_not_self_reversal"),
    ] {
        let e = conn.client().execute(sql, &[&paid.0]).unwrap_err();
        assert_eq!(e.as_db_error().and_then(|d| d.constraint()), Some(constraint), "{sql}");
    }
    assert_eq!(before, snapshot(&l)?);
    Ok(())
}

/// Many threads reverse one transfer in parts at once: exactly the original amount is
/// reversed, every other attempt is refused, and the ledger audits clean.
#[test]
fn concurrent_reversals_of_one_transfer_never_exceed_it() -> Result<()> {
    let (l, _, _, w) = funded("reversal_race", 2, dec!(100.00))?;
    let paid = l.transfer(&Transfer::new(w[0], w[1], dec!(10.00)))?.transfer_id;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || -> Result<(Decimal, usize)> {
                let (mut reversed, mut refused) = (Decimal::ZERO, 0);
                for _ in 0..5 {
                    match l.reverse(&Reversal::of(paid).amount(dec!(0.75))) {
                        Ok(r) => reversed += r.amount,
                        Err(LedgerError::ReversalExceedsOriginal { .. }) => refused += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok((reversed, refused))
            })
        })
        .collect();
    let (mut reversed, mut refused) = (Decimal::ZERO, 0);
    for t in threads {
        let (r, n) = t.join().expect("thread")?;
        reversed += r;
        refused += n;
    }
    // 13 x 0.75 = 9.75; the 14th would exceed 10.00; the last 0.25 is left.
    assert_eq!(reversed, dec!(9.75));
    assert_eq!(refused, 40 - 13);
    let last = l.reverse(&Reversal::of(paid))?;
    assert_eq!(last.amount, dec!(0.25));
    assert_eq!(l.balance(w[0])?, dec!(100.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

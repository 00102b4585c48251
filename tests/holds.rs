//! Holds: authorize, capture (full and partial), void, expire; every refusal changes nothing;
//! expiry workers race captures and each other without double-ending a hold or deadlocking.

#[macro_use]
mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use anyhow::Result;
use common::funded;
use rust_decimal_macros::dec;
use wallet_ledger::{AccountId, Hold, HoldId, HoldState, LedgerError, Transfer};

#[test]
fn card_authorization_then_partial_capture() -> Result<()> {
    let (l, _, _, w) = funded("hold_capture", 2, dec!(100.00))?;
    let (card, shop) = (w[0], w[1]);
    let auth = l.hold(&Hold::new(card, shop, dec!(80.00)).idempotency_key("auth-1").memo("hotel"))?;
    assert!(!auth.replayed);
    assert_eq!((l.balance(card)?, l.available(card)?), (dec!(100.00), dec!(20.00)));
    assert_eq!(l.account(card)?.held, dec!(80.00));
    assert_eq!(l.open_holds(card, 10)?.len(), 1);
    // The reservation counts against transfers and other holds.
    refused!(l, l.transfer(&Transfer::new(card, shop, dec!(20.01))), LedgerError::InsufficientFunds { available, .. } if available == dec!(20.00));
    refused!(l, l.hold(&Hold::new(card, shop, dec!(20.01))), LedgerError::InsufficientFunds { .. });
    // Replay and conflict of the hold's key.
    let again = l.hold(&Hold::new(card, shop, dec!(80.00)).idempotency_key("auth-1").memo("hotel"))?;
    assert!(again.replayed && again.hold_id == auth.hold_id);
    refused!(
        l,
        l.hold(&Hold::new(card, shop, dec!(81.00)).idempotency_key("auth-1").memo("hotel")),
        LedgerError::IdempotencyConflict { .. }
    );
    // More than held is refused; a partial capture releases the rest.
    refused!(l, l.capture(auth.hold_id, Some(dec!(80.01))), LedgerError::InvalidAmount { .. });
    refused!(l, l.capture(auth.hold_id, Some(dec!(0))), LedgerError::InvalidAmount { .. });
    refused!(l, l.capture(auth.hold_id, Some(dec!(1.001))), LedgerError::InvalidAmount { .. });
    let r = l.capture(auth.hold_id, Some(dec!(64.50)))?;
    assert_eq!(
        (r.from, r.to, r.amount, r.from_balance, r.to_balance),
        (card, shop, dec!(64.50), dec!(35.50), dec!(164.50))
    );
    assert_eq!((l.balance(card)?, l.available(card)?, l.account(card)?.held), (dec!(35.50), dec!(35.50), dec!(0)));
    // A hold ends exactly once.
    refused!(l, l.capture(auth.hold_id, None), LedgerError::HoldNotPending { state: HoldState::Captured, .. });
    refused!(l, l.void(auth.hold_id), LedgerError::HoldNotPending { state: HoldState::Captured, .. });
    refused!(l, l.capture(HoldId(999_999), None), LedgerError::HoldNotFound { .. });
    refused!(l, l.void(HoldId(999_999)), LedgerError::HoldNotFound { .. });
    assert!(l.open_holds(card, 10)?.is_empty());
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    Ok(())
}

#[test]
fn hold_refusals_change_nothing() -> Result<()> {
    let (l, _, _, w) = funded("hold_refusals", 2, dec!(10.00))?;
    l.define_currency("EUR", 2)?;
    let eur = l.open_account(&wallet_ledger::NewAccount::new("EUR"))?.id;
    refused!(l, l.hold(&Hold::new(w[0], w[1], dec!(0))), LedgerError::InvalidAmount { .. });
    refused!(l, l.hold(&Hold::new(w[0], w[1], dec!(-1))), LedgerError::InvalidAmount { .. });
    refused!(l, l.hold(&Hold::new(w[0], w[1], dec!(0.001))), LedgerError::InvalidAmount { .. });
    refused!(l, l.hold(&Hold::new(w[0], w[0], dec!(1))), LedgerError::SameAccount { .. });
    refused!(l, l.hold(&Hold::new(w[0], AccountId(424_242), dec!(1))), LedgerError::AccountNotFound { .. });
    refused!(l, l.hold(&Hold::new(w[0], eur, dec!(1))), LedgerError::CurrencyMismatch { .. });
    refused!(l, l.hold(&Hold::new(w[0], w[1], dec!(10.01))), LedgerError::InsufficientFunds { .. });
    refused!(
        l,
        l.hold(&Hold::new(w[0], w[1], dec!(1)).expires_in(Duration::from_secs(400 * 86400))),
        LedgerError::InvalidInput { .. }
    );
    refused!(l, l.hold(&Hold::new(w[0], w[1], dec!(1)).idempotency_key("~x")), LedgerError::InvalidInput { .. });
    refused!(l, l.expire_holds(0), LedgerError::InvalidInput { .. });
    refused!(l, l.hold(&Hold::new(w[0], w[1], dec!(1)).expires_in(Duration::ZERO)), LedgerError::InvalidInput { .. });
    Ok(())
}

#[test]
fn void_and_expiry_release_the_reservation() -> Result<()> {
    let (l, _, _, w) = funded("hold_void", 2, dec!(50.00))?;
    let h = l.hold(&Hold::new(w[0], w[1], dec!(30.00)))?;
    l.void(h.hold_id)?;
    assert_eq!(l.available(w[0])?, dec!(50.00));
    assert!(matches!(l.void(h.hold_id), Err(LedgerError::HoldNotPending { state: HoldState::Voided, .. })));

    let lapsing = l.hold(&Hold::new(w[0], w[1], dec!(20.00)).expires_in(Duration::from_millis(50)))?;
    let lasting = l.hold(&Hold::new(w[0], w[1], dec!(5.00)))?;
    assert_eq!(l.available(w[0])?, dec!(25.00));
    thread::sleep(Duration::from_millis(120));
    // Lapsed but not yet released: it can no longer be captured or voided, and that changes nothing.
    refused!(l, l.capture(lapsing.hold_id, None), LedgerError::HoldNotPending { state: HoldState::Expired, .. });
    assert_eq!(l.expire_holds(100)?, 1);
    assert_eq!(l.expire_holds(100)?, 0);
    assert_eq!(l.available(w[0])?, dec!(45.00));
    assert!(matches!(l.void(lapsing.hold_id), Err(LedgerError::HoldNotPending { state: HoldState::Expired, .. })));
    assert_eq!(l.capture(lasting.hold_id, None)?.from_balance, dec!(45.00));
    let mut conn = l.connection()?;
    let events: Vec<String> = conn
        .client()
        .query("SELECT event FROM wallet_ledger.hold_events WHERE hold_id = $1 ORDER BY id", &[&lapsing.hold_id.0])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["created", "expired"]);
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn audit_catches_a_held_amount_that_does_not_match_the_holds() -> Result<()> {
    let (l, _, _, w) = funded("hold_audit", 2, dec!(50.00))?;
    l.hold(&Hold::new(w[0], w[1], dec!(10.00)))?;
    assert!(l.verify()?.is_clean());
    let mut conn = l.connection()?;
    conn.client().execute("UPDATE wallet_ledger.accounts SET held = held - 1 WHERE id = $1", &[&w[0].0])?;
    let audit = l.verify()?;
    assert!(
        audit
            .violations
            .iter()
            .any(|v| matches!(v, wallet_ledger::Violation::HeldMismatch { account, .. } if *account == w[0])),
        "{audit:?}"
    );
    Ok(())
}

/// Captures, voids and four expiry workers race over the same lapsing holds: each hold ends
/// exactly once, the reservations all come back, nothing deadlocks.
#[test]
fn expiry_workers_race_captures_and_voids() -> Result<()> {
    let (l, url, _, w) = funded("hold_race", 6, dec!(1000.00))?;
    let before = common::deadlocks(&url)?;
    let mut holds = Vec::new();
    for i in 0..300 {
        let h = Hold::new(w[i % 6], w[(i + 1) % 6], dec!(1.00)).expires_in(Duration::from_millis(if i % 3 == 0 {
            1
        } else {
            400
        }));
        holds.push(l.hold(&h)?.hold_id);
    }
    thread::sleep(Duration::from_millis(20));
    let holds = Arc::new(holds);
    let barrier = Arc::new(Barrier::new(8));
    let mut handles = Vec::new();
    for t in 0..8 {
        let (l, holds, barrier) = (l.clone(), holds.clone(), barrier.clone());
        handles.push(thread::spawn(move || -> Result<(usize, usize)> {
            barrier.wait();
            let (mut ended, mut refused) = (0, 0);
            if t < 4 {
                for _ in 0..40 {
                    ended += l.expire_holds(7)?;
                    thread::sleep(Duration::from_millis(12));
                }
                return Ok((ended, refused));
            }
            for (i, h) in holds.iter().enumerate().filter(|(i, _)| i % 4 == t - 4) {
                let result = if i % 2 == 0 { l.capture(*h, None).map(|_| ()) } else { l.void(*h) };
                match result {
                    Ok(()) => ended += 1,
                    Err(LedgerError::HoldNotPending { .. }) => refused += 1,
                    Err(e) => anyhow::bail!("unexpected error: {e:?}"),
                }
            }
            Ok((ended, refused))
        }));
    }
    let mut ended = 0;
    for h in handles {
        ended += h.join().expect("worker panicked")?.0;
    }
    thread::sleep(Duration::from_millis(450));
    ended += l.expire_holds(1000)?;
    assert_eq!(ended, 300, "every hold must end exactly once");
    let mut conn = l.connection()?;
    let client = conn.client();
    let per_hold: Vec<i64> = client
        .query("SELECT count(*) FROM wallet_ledger.hold_events WHERE event <> 'created' GROUP BY hold_id", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(per_hold.len(), 300);
    assert!(per_hold.iter().all(|n| *n == 1));
    let held: rust_decimal::Decimal = client.query_one("SELECT sum(held) FROM wallet_ledger.accounts", &[])?.get(0);
    assert_eq!(held, dec!(0));
    drop(conn);
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    drop(l);
    assert_eq!(common::deadlocks(&url)?, before);
    Ok(())
}

/// What a checker sees after expiry workers ran: holds ended more than once, accounts whose
/// `held` no longer matches their pending holds, and errors the database's constraints raised.
fn double_endings(l: &wallet_ledger::Ledger) -> Result<(i64, usize)> {
    let mut conn = l.connection()?;
    let twice: i64 = conn
        .client()
        .query_one(
            "SELECT count(*) FROM (SELECT hold_id FROM wallet_ledger.hold_events WHERE event <> 'created'
              GROUP BY hold_id HAVING count(*) > 1) d",
            &[],
        )?
        .get(0);
    drop(conn);
    let held_mismatches =
        l.verify()?.violations.iter().filter(|v| matches!(v, wallet_ledger::Violation::HeldMismatch { .. })).count();
    Ok((twice, held_mismatches))
}

#[test]
fn control_unlocked_expiry_is_caught_ending_holds_twice() -> Result<()> {
    use wallet_ledger::testkit::expiry_controls::ExpiryControl;
    let (l, _, _, w) = funded("expiry_control", 4, dec!(1000.00))?;
    // Long-lived holds keep every `held` well above what a double release takes away, so the
    // `held >= 0` constraint stays silent and only the checker can catch the bug.
    for i in 0..4 {
        l.hold(&Hold::new(w[i], w[(i + 1) % 4], dec!(500.00)))?;
    }
    let mut caught = false;
    // Rounds of lapsed holds drained by 4 unlocked workers at once; a few rounds suffice.
    for round in 0..20 {
        for i in 0..40 {
            l.hold(&Hold::new(w[i % 4], w[(i + 1) % 4], dec!(1.00)).expires_in(Duration::from_millis(1)))?;
        }
        thread::sleep(Duration::from_millis(5));
        let barrier = Arc::new(Barrier::new(4));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (l, barrier) = (l.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    // A constraint refusing the second ending is the database catching the bug.
                    ExpiryControl::Unlocked.expire_holds(&l, 40).is_err() as usize
                })
            })
            .collect();
        let errors: usize = workers.into_iter().map(|h| h.join().expect("worker panicked")).sum();
        let (twice, mismatches) = double_endings(&l)?;
        assert_eq!(errors, 0, "with held kept positive no constraint should fire");
        if twice > 0 && mismatches > 0 {
            caught = true;
            println!(
                "round {round}: {twice} holds ended twice, {mismatches} held mismatches, {errors} constraint errors"
            );
            break;
        }
        // Clean up what this round left pending so the next round starts fresh.
        l.expire_holds(1000)?;
    }
    assert!(caught, "unlocked expiry workers were never caught ending a hold twice");
    Ok(())
}

#[test]
fn skip_locked_workers_do_not_wait_where_the_no_skip_control_does() -> Result<()> {
    use wallet_ledger::testkit::expiry_controls::ExpiryControl;
    let (l, url, _, w) = funded("expiry_wait", 2, dec!(100.00))?;
    for _ in 0..10 {
        l.hold(&Hold::new(w[0], w[1], dec!(1.00)).expires_in(Duration::from_millis(1)))?;
    }
    thread::sleep(Duration::from_millis(5));
    // Another worker has claimed the oldest lapsed hold and is still working on it.
    let mut other = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut claim = other.transaction()?;
    claim.query(
        "SELECT id FROM wallet_ledger.holds WHERE state = 'pending' ORDER BY expires_at, id LIMIT 1 FOR UPDATE",
        &[],
    )?;

    // The library's worker skips it and drains the other nine.
    assert_eq!(l.expire_holds(100)?, 9);
    // The control queues behind the claimed hold: bounded here by a statement timeout.
    let blocked =
        wallet_ledger::Ledger::builder(&format!("{url} options='-c statement_timeout=500'")).pool_size(1).build()?;
    let e = ExpiryControl::NoSkipLocked.expire_holds(&blocked, 100).unwrap_err();
    assert_eq!(e.sql_state(), Some(&postgres::error::SqlState::QUERY_CANCELED), "{e:?}");
    claim.rollback()?;
    // Released by the other worker's rollback, the last hold expires.
    assert_eq!(l.expire_holds(100)?, 1);
    assert!(l.verify()?.is_clean());
    Ok(())
}

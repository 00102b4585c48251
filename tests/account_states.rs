//! Freeze, unfreeze, close: every path refuses what the state forbids, with a typed error and
//! nothing changed; the database refuses the bad states behind the library's back; a freeze
//! racing transfers is all-or-nothing.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use common::{funded, snapshot};
use rust_decimal_macros::dec;
use wallet_ledger::{AccountStatus, Hold, LedgerError, Posting, Transfer};

#[test]
fn a_frozen_account_pays_nothing_and_still_receives() -> Result<()> {
    let (l, _, issuer, w) = funded("frozen_pays_nothing", 3, dec!(100.00))?;
    let (suspect, shop, other) = (w[0], w[1], w[2]);
    let before_freeze = l.hold(&Hold::new(suspect, shop, dec!(10.00)))?;
    let voided = l.hold(&Hold::new(suspect, shop, dec!(5.00)))?;
    let frozen = l.freeze(suspect)?;
    assert_eq!(frozen.status, AccountStatus::Frozen);
    assert_eq!(l.account(suspect)?.status, AccountStatus::Frozen);
    assert_eq!(l.freeze(suspect)?.status, AccountStatus::Frozen, "idempotent");

    let is_suspect = |account| account == suspect;
    refused!(l, l.transfer(&Transfer::new(suspect, shop, dec!(1.00))), LedgerError::AccountFrozen { account } if is_suspect(account));
    refused!(l, l.hold(&Hold::new(suspect, shop, dec!(1.00))), LedgerError::AccountFrozen { account } if is_suspect(account));
    refused!(l, l.capture(before_freeze.hold_id, None), LedgerError::AccountFrozen { account } if is_suspect(account));
    refused!(
        l,
        l.post(&Posting::new().leg(suspect, dec!(-1.00)).leg(shop, dec!(0.50)).leg(other, dec!(0.50))),
        LedgerError::AccountFrozen { account } if is_suspect(account)
    );
    let batch =
        l.transfer_batch(&[Transfer::new(shop, other, dec!(1.00)), Transfer::new(suspect, shop, dec!(1.00))])?;
    assert!(batch[0].is_ok(), "{:?}", batch[0]);
    assert!(matches!(batch[1], Err(LedgerError::AccountFrozen { account }) if account == suspect), "{:?}", batch[1]);
    let mut conn = l.connection()?;
    let mut tx = conn.client().transaction()?;
    let e = l.transfer_in(&mut tx, &Transfer::new(suspect, shop, dec!(1.00))).unwrap_err();
    assert!(matches!(e, LedgerError::AccountFrozen { .. }), "{e:?}");
    tx.commit()?;
    drop(conn);

    // Credits, voids and incoming postings still go through.
    l.transfer(&Transfer::new(issuer, suspect, dec!(1.00)))?;
    l.post(&Posting::new().leg(shop, dec!(-1.00)).leg(suspect, dec!(1.00)))?;
    l.void(voided.hold_id)?;
    assert_eq!(l.balance(suspect)?, dec!(102.00));

    let open = l.unfreeze(suspect)?;
    assert_eq!(open.status, AccountStatus::Open);
    l.capture(before_freeze.hold_id, None)?;
    l.transfer(&Transfer::new(suspect, shop, dec!(1.00)))?;
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_closed_account_needs_zero_and_then_moves_nothing() -> Result<()> {
    let (l, _, issuer, w) = funded("closed_moves_nothing", 3, dec!(10.00))?;
    let (leaving, shop, other) = (w[0], w[1], w[2]);
    let hold = l.hold(&Hold::new(leaving, shop, dec!(4.00)))?;
    let e = refused!(l, l.close(leaving), LedgerError::AccountNotEmpty { account, .. } if account == leaving);
    assert!(
        matches!(e, LedgerError::AccountNotEmpty { balance, held, .. } if balance == dec!(10.00) && held == dec!(4.00))
    );
    assert_eq!(l.account(leaving)?.status, AccountStatus::Open);
    l.capture(hold.hold_id, None)?;
    l.transfer(&Transfer::new(leaving, issuer, dec!(6.00)))?;
    let closed = l.close(leaving)?;
    assert_eq!((closed.status, closed.balance), (AccountStatus::Closed, dec!(0)));
    assert_eq!(l.close(leaving)?.status, AccountStatus::Closed, "closing again answers with it");

    let is_leaving = |account| account == leaving;
    refused!(l, l.transfer(&Transfer::new(issuer, leaving, dec!(1.00))), LedgerError::AccountClosed { account } if is_leaving(account));
    refused!(l, l.transfer(&Transfer::new(leaving, shop, dec!(1.00))), LedgerError::AccountClosed { account } if is_leaving(account));
    refused!(l, l.hold(&Hold::new(shop, leaving, dec!(1.00))), LedgerError::AccountClosed { account } if is_leaving(account));
    refused!(l, l.post(&Posting::new().leg(shop, dec!(-1.00)).leg(leaving, dec!(1.00))), LedgerError::AccountClosed { account } if is_leaving(account));
    let batch =
        l.transfer_batch(&[Transfer::new(shop, leaving, dec!(1.00)), Transfer::new(shop, other, dec!(1.00))])?;
    assert!(matches!(batch[0], Err(LedgerError::AccountClosed { account }) if account == leaving), "{:?}", batch[0]);
    assert!(batch[1].is_ok());
    // A hold on its way to an account that closes meanwhile is not captured into it.
    let to_other = l.hold(&Hold::new(shop, other, dec!(1.00)))?;
    l.transfer(&Transfer::new(other, shop, l.balance(other)?))?;
    l.close(other)?;
    refused!(l, l.capture(to_other.hold_id, None), LedgerError::AccountClosed { account } if account == other);
    l.void(to_other.hold_id)?;
    // Closing is final.
    refused!(l, l.freeze(leaving), LedgerError::AccountClosed { .. });
    refused!(l, l.unfreeze(leaving), LedgerError::AccountClosed { .. });
    refused!(l, l.set_max_balance(leaving, Some(dec!(5))), LedgerError::AccountClosed { .. });
    assert_eq!(l.account(leaving)?.status, AccountStatus::Closed);
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn unknown_accounts_are_refused() -> Result<()> {
    let (l, _, _, _) = funded("states_unknown", 1, dec!(1.00))?;
    let ghost = wallet_ledger::AccountId(987_654);
    refused!(l, l.freeze(ghost), LedgerError::AccountNotFound { account } if account == ghost);
    refused!(l, l.unfreeze(ghost), LedgerError::AccountNotFound { .. });
    refused!(l, l.close(ghost), LedgerError::AccountNotFound { .. });
    Ok(())
}

#[test]
fn the_database_refuses_bad_states_written_behind_the_librarys_back() -> Result<()> {
    let (l, _, _, w) = funded("states_constraints", 1, dec!(10.00))?;
    let mut conn = l.connection()?;
    let client = conn.client();
    for (sql, constraint) in [
        ("UPDATE wallet_ledger.accounts SET status = 'closed' WHERE id = $1", "accounts_closed_empty"),
        ("UPDATE wallet_ledger.accounts SET status = 'suspended' WHERE id = $1", "accounts_status"),
        ("UPDATE wallet_ledger.accounts SET max_balance = 9.99 WHERE id = $1", "accounts_ceiling"),
        ("UPDATE wallet_ledger.accounts SET max_balance = -1 WHERE id = $1", "accounts_ceiling"),
    ] {
        let before = snapshot(&l)?;
        let e = client.execute(sql, &[&w[0].0]).unwrap_err();
        let db = e.as_db_error().expect("a database error");
        assert_eq!(db.constraint(), Some(constraint), "{sql}: {db}");
        assert_eq!(before, snapshot(&l)?);
    }
    assert_eq!(l.account(w[0])?.status, AccountStatus::Open);
    Ok(())
}

/// A freeze racing transfers on the same account: each transfer either committed before the
/// freeze (its debit has a version at most the version the freeze saw) or was refused after it.
#[test]
fn a_freeze_racing_transfers_is_all_or_nothing() -> Result<()> {
    let (l, _, _, w) = funded("freeze_race", 5, dec!(10000.00))?;
    let suspect = w[0];
    let stop = Arc::new(AtomicBool::new(false));
    let frozen_seen = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for i in 0..6 {
        let (l, stop, frozen_seen, to) = (l.clone(), stop.clone(), frozen_seen.clone(), w[1 + i % 4]);
        threads.push(std::thread::spawn(move || -> Result<(usize, usize)> {
            let (mut ok, mut refused) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let known_frozen = frozen_seen.load(Ordering::SeqCst);
                match l.transfer(&Transfer::new(suspect, to, dec!(0.01))) {
                    Ok(_) => {
                        assert!(!known_frozen, "a transfer started after the freeze returned went through");
                        ok += 1;
                    }
                    Err(LedgerError::AccountFrozen { account }) if account == suspect => refused += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((ok, refused))
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let frozen = l.freeze(suspect)?;
    frozen_seen.store(true, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for t in threads {
        let (o, r) = t.join().expect("thread")?;
        ok += o;
        refused += r;
    }
    assert!(ok > 0 && refused > 0, "the race happened: {ok} applied, {refused} refused");
    let account = l.account(suspect)?;
    assert_eq!(account.version, frozen.version, "no debit after the freeze");
    assert_eq!(account.balance, frozen.balance);
    assert_eq!(account.balance, dec!(10000.00) - dec!(0.01) * rust_decimal::Decimal::from(ok));
    assert!(l.verify()?.is_clean());
    Ok(())
}

//! The ledger inside the caller's own transaction: atomic with the caller's rows, refusals
//! leave the transaction usable, the documented lock pattern never deadlocks, and breaking its
//! first rule does.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{deadlocks, funded};
use postgres::{Client, NoTls};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{AccountId, Hold, Ledger, LedgerError, LockWait, Transfer};

/// The backend's own table. It references the ledger's accounts by foreign key, as a real one
/// would: inserting an order takes `FOR KEY SHARE` on the account row.
fn app_client(url: &str) -> Result<Client> {
    let mut c = Client::connect(url, NoTls)?;
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS app_orders (id bigserial PRIMARY KEY, total numeric NOT NULL, failure text,
                                                account bigint REFERENCES wallet_ledger.accounts (id))",
    )?;
    Ok(c)
}

fn orders(c: &mut Client) -> Result<Vec<(Decimal, Option<String>)>> {
    Ok(c.query("SELECT total, failure FROM app_orders ORDER BY id", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

#[test]
fn order_and_payment_commit_or_roll_back_together() -> Result<()> {
    let (l, url, _, w) = funded("embed_atomic", 2, dec!(50.00))?;
    let mut app = app_client(&url)?;

    let mut tx = app.transaction()?;
    tx.execute("INSERT INTO app_orders (total) VALUES ($1)", &[&dec!(20.00)])?;
    let r = l.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(20.00)).idempotency_key("order-1"))?;
    assert_eq!(r.from_balance, dec!(30.00));
    tx.commit()?;
    assert_eq!(l.balance(w[0])?, dec!(30.00));

    // Rolled back with the caller: neither the order nor the money.
    let before = common::snapshot(&l)?;
    let mut tx = app.transaction()?;
    tx.execute("INSERT INTO app_orders (total) VALUES ($1)", &[&dec!(5.00)])?;
    l.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(5.00)).idempotency_key("order-2"))?;
    tx.rollback()?;
    assert_eq!(before, common::snapshot(&l)?);

    // A refusal leaves the caller's transaction usable: it records the failure and commits.
    let mut tx = app.transaction()?;
    tx.execute("INSERT INTO app_orders (total) VALUES ($1)", &[&dec!(99.00)])?;
    let e = l.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(99.00))).unwrap_err();
    assert!(matches!(e, LedgerError::InsufficientFunds { .. }), "{e:?}");
    tx.execute("UPDATE app_orders SET failure = $1 WHERE total = 99.00", &[&e.to_string()])?;
    tx.commit()?;
    assert_eq!(before, common::snapshot(&l)?);
    let all = orders(&mut app)?;
    assert_eq!(all.len(), 2);
    assert!(all[1].1.as_deref().is_some_and(|f| f.contains("insufficient funds")));

    // A replayed key inside a caller transaction returns the first receipt.
    let mut tx = app.transaction()?;
    let again = l.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(20.00)).idempotency_key("order-1"))?;
    tx.commit()?;
    assert!(again.replayed && again.transfer_id == r.transfer_id);
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_lock_refusal_leaves_the_transaction_usable() -> Result<()> {
    let (_, url, _, w) = funded("embed_nowait", 2, dec!(50.00))?;
    let nowait = Ledger::builder(&url).lock_wait(LockWait::NoWait).build()?;
    let mut holder = Client::connect(&url, NoTls)?;
    let mut held = holder.transaction()?;
    held.query("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE", &[&w[1].0])?;

    let mut app = app_client(&url)?;
    let mut tx = app.transaction()?;
    tx.execute("INSERT INTO app_orders (total) VALUES (1)", &[])?;
    let e = nowait.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(1))).unwrap_err();
    assert!(matches!(e, LedgerError::LockUnavailable { .. }), "{e:?}");
    // Still usable.
    tx.execute("INSERT INTO app_orders (total) VALUES (2)", &[])?;
    tx.commit()?;
    held.rollback()?;
    assert_eq!(orders(&mut app)?.len(), 2);

    // A Timeout policy's lock_timeout applies to the ledger's lock only, not to the rest of the
    // caller's transaction.
    let timeout = Ledger::builder(&url).lock_wait(LockWait::Timeout(Duration::from_millis(250))).build()?;
    let mut tx = app.transaction()?;
    tx.batch_execute("SET LOCAL lock_timeout = '7s'")?;
    timeout.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(1)))?;
    let setting: String = tx.query_one("SELECT current_setting('lock_timeout')", &[])?.get(0);
    assert_eq!(setting, "7s");
    tx.commit()?;
    Ok(())
}

#[test]
fn holds_inside_the_callers_transaction() -> Result<()> {
    let (l, url, _, w) = funded("embed_holds", 2, dec!(50.00))?;
    let mut app = app_client(&url)?;
    let mut tx = app.transaction()?;
    let h = l.hold_in(&mut tx, &Hold::new(w[0], w[1], dec!(30.00)).idempotency_key("auth-1"))?;
    let r = l.capture_in(&mut tx, h.hold_id, Some(dec!(10.00)))?;
    assert_eq!(r.from_balance, dec!(40.00));
    let e = l.void_in(&mut tx, h.hold_id).unwrap_err();
    assert!(matches!(e, LedgerError::HoldNotPending { .. }), "{e:?}");
    tx.commit()?;
    assert_eq!(l.available(w[0])?, dec!(40.00));
    let mut tx = app.transaction()?;
    let h2 = l.hold_in(&mut tx, &Hold::new(w[0], w[1], dec!(5.00)))?;
    l.void_in(&mut tx, h2.hold_id)?;
    tx.commit()?;
    assert_eq!(l.available(w[0])?, dec!(40.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

/// 8 threads: each transaction writes an order row (with a foreign key to an account), then
/// makes one ledger call (rules 1-3 of the module docs), in both directions around three accounts.
#[test]
fn the_documented_pattern_never_deadlocks() -> Result<()> {
    let (l, url, _, w) = funded("embed_pattern", 3, dec!(100.00))?;
    app_client(&url)?;
    let before = deadlocks(&url)?;
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (l, url, w, barrier) = (l.clone(), url.clone(), w.clone(), barrier.clone());
            thread::spawn(move || -> Result<usize> {
                let mut app = Client::connect(&url, NoTls)?;
                barrier.wait();
                let mut ok = 0;
                for i in 0..120 {
                    let (from, to) = (w[(t + i) % 3], w[(t + i + 1 + (i % 2)) % 3]);
                    let mut tx = app.transaction()?;
                    // The order references the *receiving* account: other threads debit it.
                    tx.execute("INSERT INTO app_orders (total, account) VALUES (0.01, $1)", &[&to.0])?;
                    match l.transfer_in(&mut tx, &Transfer::new(from, to, dec!(0.01))) {
                        Ok(_) => ok += 1,
                        Err(LedgerError::InsufficientFunds { .. }) => {}
                        Err(e) => anyhow::bail!("unexpected: {e:?}"),
                    }
                    tx.commit()?;
                }
                Ok(ok)
            })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        ok += h.join().expect("worker panicked")?;
    }
    assert!(ok > 800, "too few transfers to prove anything: {ok}");
    assert!(l.verify()?.is_clean());
    drop(l);
    assert_eq!(deadlocks(&url)?, before, "the documented pattern deadlocked");
    Ok(())
}

/// The control: two ledger calls in one caller transaction (breaking rule 1), in opposite
/// orders on different threads. The server's deadlock counter must rise.
#[test]
fn control_two_ledger_calls_in_one_transaction_deadlock() -> Result<()> {
    let (l, url, _, w) = funded("embed_control", 4, dec!(100.00))?;
    let before = deadlocks(&url)?;
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(20);
    let barrier = Arc::new(Barrier::new(8));
    let pairs: [(AccountId, AccountId); 2] = [(w[0], w[1]), (w[2], w[3])];
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (l, url, stop, barrier) = (l.clone(), url.clone(), stop.clone(), barrier.clone());
            thread::spawn(move || -> Result<usize> {
                let mut app = Client::connect(&url, NoTls)?;
                barrier.wait();
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let (first, second) = if t % 2 == 0 { (pairs[0], pairs[1]) } else { (pairs[1], pairs[0]) };
                    let mut tx = app.transaction()?;
                    let result = l
                        .transfer_in(&mut tx, &Transfer::new(first.0, first.1, dec!(0.01)))
                        .and_then(|_| l.transfer_in(&mut tx, &Transfer::new(second.1, second.0, dec!(0.01))));
                    match result {
                        Ok(_) => tx.commit()?,
                        Err(e) if e.sql_state() == Some(&postgres::error::SqlState::T_R_DEADLOCK_DETECTED) => {
                            seen += 1;
                            stop.store(true, Ordering::Relaxed);
                            tx.rollback()?;
                        }
                        Err(e) => anyhow::bail!("unexpected: {e:?}"),
                    }
                }
                Ok(seen)
            })
        })
        .collect();
    let mut seen = 0;
    for h in handles {
        seen += h.join().expect("worker panicked")?;
    }
    assert!(seen > 0, "two ledger calls per transaction never deadlocked in 20 s");
    drop(l);
    assert!(deadlocks(&url)? > before, "the server's deadlock counter did not rise");
    Ok(())
}

#[test]
fn a_refusal_inside_a_transaction_releases_its_locks() -> Result<()> {
    let (l, url, _, w) = funded("embed_release", 2, dec!(10.00))?;
    let nowait = Ledger::builder(&url).lock_wait(LockWait::NoWait).build()?;
    let mut app = app_client(&url)?;
    let mut tx = app.transaction()?;
    let e = l.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(99.00))).unwrap_err();
    assert!(matches!(e, LedgerError::InsufficientFunds { .. }), "{e:?}");
    // The caller's transaction is still open; the refused transfer must not keep the rows locked.
    nowait.transfer(&Transfer::new(w[1], w[0], dec!(1.00)))?;
    // A successful call keeps its locks until the caller commits, as it must.
    l.transfer_in(&mut tx, &Transfer::new(w[0], w[1], dec!(2.00)))?;
    let blocked = nowait.transfer(&Transfer::new(w[1], w[0], dec!(1.00))).unwrap_err();
    assert!(matches!(blocked, LedgerError::LockUnavailable { .. }), "{blocked:?}");
    tx.commit()?;
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn expiry_is_measured_from_the_call_not_the_transaction_start() -> Result<()> {
    let (l, url, _, w) = funded("embed_clock", 2, dec!(10.00))?;
    let mut app = app_client(&url)?;
    let mut tx = app.transaction()?;
    tx.execute("INSERT INTO app_orders (total) VALUES (1)", &[])?; // the transaction has started
    thread::sleep(Duration::from_millis(300));
    let h = l.hold_in(&mut tx, &Hold::new(w[0], w[1], dec!(1.00)).expires_in(Duration::from_millis(200)))?;
    // Made now, lapsing in 200 ms: not lapsed at birth although the transaction is 300 ms old.
    l.capture_in(&mut tx, h.hold_id, None)?;
    tx.commit()?;
    Ok(())
}

#[test]
fn an_unrepresentable_balance_is_an_invalid_amount_inside_a_transaction_too() -> Result<()> {
    let (l, url, issuer, w) = funded("embed_overflow", 1, dec!(1.00))?;
    let mut app = app_client(&url)?;
    let mut tx = app.transaction()?;
    let huge = dec!(1000000000000000000000000000);
    let e = l.transfer_in(&mut tx, &Transfer::new(issuer, w[0], huge)).unwrap_err();
    assert!(matches!(e, LedgerError::InvalidAmount { .. }), "{e:?}");
    tx.execute("INSERT INTO app_orders (total) VALUES (1)", &[])?; // still usable
    tx.commit()?;
    assert_eq!(l.balance(w[0])?, dec!(1.00));
    Ok(())
}

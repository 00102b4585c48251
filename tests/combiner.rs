//! The combiner on real threads and connections: every caller gets its own result, batches
//! really form, a refusal stays with its caller, keys behave as alone, a lock refusal reaches
//! only the callers whose accounts are locked, and a batch's database error reaches every caller
//! of that batch with nothing applied.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use anyhow::Result;
use common::{
    await_lock_waiters, deadlocks, funded, last_transfer, pairs_in_two_lanes, snapshot, transactions_after, RowLock,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{CombineConfig, Ledger, LedgerError, LockWait, Receipt, Transfer};

fn combined(url: &str, config: CombineConfig) -> Result<Ledger> {
    Ok(Ledger::builder(url).pool_size(20).combine(config).build()?)
}

/// Runs `f(thread)` on `threads` threads released together; collects the results.
fn together<T: Send + 'static>(threads: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(threads));
    let f = Arc::new(f);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (barrier, f) = (barrier.clone(), f.clone());
            thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("worker panicked")).collect()
}

/// Every caller got a receipt of exactly what it sent, and no two callers the same transfer.
fn assert_own_receipts(results: &[Vec<(Transfer, Result<Receipt, LedgerError>)>]) {
    let mut ids = std::collections::HashSet::new();
    for (sent, result) in results.iter().flatten() {
        let r: &Receipt = result.as_ref().unwrap_or_else(|e| panic!("{sent:?}: {e:?}"));
        assert_eq!((r.from, r.to, r.amount, r.replayed), (sent.from, sent.to, sent.amount, false));
        assert!(ids.insert(r.transfer_id), "two callers were given transfer {}", r.transfer_id);
    }
}

#[test]
fn sixteen_threads_on_one_pair_each_get_their_own_receipt() -> Result<()> {
    let (l, url, _, w) = funded("combine_pair", 2, dec!(1000.00))?;
    let deadlocks_before = deadlocks(&url)?;
    let c = combined(&url, CombineConfig::default())?;
    let watermark = last_transfer(&url)?;
    let (a, b) = (w[0], w[1]);
    let per_thread = 30;
    let results = {
        let c = c.clone();
        together(16, move |t| {
            (0..per_thread)
                .map(|i| {
                    let (from, to) = if (t + i) % 2 == 0 { (a, b) } else { (b, a) };
                    let amount = Decimal::new((t * 100 + i + 1) as i64, 2);
                    let sent = Transfer::new(from, to, amount);
                    (sent.clone(), c.transfer(&sent))
                })
                .collect::<Vec<_>>()
        })
    };
    assert_own_receipts(&results);
    let (transfers, transactions) = transactions_after(&url, watermark)?;
    assert_eq!(transfers, 16 * per_thread as i64);
    assert!(transactions < transfers / 2, "no batching: {transfers} transfers in {transactions} transactions");
    assert_eq!(l.balance(a)? + l.balance(b)?, dec!(2000.00));
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert_eq!(c.stats().succeeded, 16 * per_thread as u64);
    drop((c, l));
    assert_eq!(deadlocks(&url)?, deadlocks_before);
    Ok(())
}

#[test]
fn a_refusal_stays_with_its_caller_and_keys_behave_as_alone() -> Result<()> {
    let (l, url, _, w) = funded("combine_refusals", 3, dec!(100.00))?;
    // A long wait and a full-size batch: the 12 callers land in one or two batches.
    let c = combined(&url, CombineConfig { max_batch: 12, max_wait: Duration::from_millis(300) })?;
    let (a, b, poor) = (w[0], w[1], w[2]);
    let results = {
        let c = c.clone();
        together(12, move |t| match t {
            0..=3 => c.transfer(&Transfer::new(a, b, dec!(1.00))),
            4 | 5 => c.transfer(&Transfer::new(poor, a, dec!(500.00))),
            6 => c.transfer(&Transfer::new(a, a, dec!(1.00))),
            // Five callers with one key and the same content: one applies, four replay.
            7..=11 => c.transfer(&Transfer::new(b, a, dec!(2.50)).idempotency_key("same")),
            _ => unreachable!(),
        })
    };
    for r in &results[0..4] {
        assert!(r.as_ref().is_ok_and(|r| !r.replayed), "{r:?}");
    }
    for r in &results[4..6] {
        assert!(matches!(r, Err(LedgerError::InsufficientFunds { account, .. }) if *account == poor), "{r:?}");
    }
    assert!(matches!(results[6], Err(LedgerError::SameAccount { .. })), "{:?}", results[6]);
    let keyed: Vec<&Receipt> = results[7..].iter().map(|r| r.as_ref().expect("keyed transfers succeed")).collect();
    assert_eq!(keyed.iter().filter(|r| !r.replayed).count(), 1, "{keyed:?}");
    assert!(keyed.iter().all(|r| r.transfer_id == keyed[0].transfer_id));
    // 100 - 4 + 2.50 on a, 100 + 4 - 2.50 on b.
    assert_eq!(l.balance(a)?, dec!(98.50));
    assert_eq!(l.balance(b)?, dec!(101.50));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_lock_refusal_reaches_only_the_callers_whose_accounts_are_locked() -> Result<()> {
    let (l, url, _, w) = funded("combine_nowait", 4, dec!(100.00))?;
    let mut holder = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut tx = holder.transaction()?;
    tx.query_one("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE", &[&w[3].0])?;
    let c = Ledger::builder(&url)
        .lock_wait(LockWait::NoWait)
        .combine(CombineConfig { max_batch: 8, max_wait: Duration::from_millis(300) })
        .build()?;
    let results = {
        let (c, w) = (c.clone(), w.clone());
        together(8, move |t| {
            if t < 2 {
                c.transfer(&Transfer::new(w[2], w[3], dec!(1.00)))
            } else {
                c.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))
            }
        })
    };
    tx.rollback()?;
    for r in &results[..2] {
        assert!(matches!(r, Err(LedgerError::LockUnavailable { .. })), "{r:?}");
    }
    for r in &results[2..] {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(l.balance(w[1])?, dec!(106.00));
    assert_eq!(l.balance(w[3])?, dec!(100.00));
    Ok(())
}

#[test]
fn a_database_error_reaches_every_caller_of_the_batch_and_applies_none() -> Result<()> {
    let (l, url, _, w) = funded("combine_db_error", 2, dec!(100.00))?;
    // A trigger that fails any transaction writing a transfer with memo 'boom'.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls)?;
    admin.batch_execute(
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.memo = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER boom BEFORE INSERT ON wallet_ledger.transfers FOR EACH ROW EXECUTE FUNCTION boom();",
    )?;
    let before = snapshot(&l)?;
    // One batch of all 6 callers (max_batch 6, long wait), one of them poisoned.
    let c = combined(&url, CombineConfig { max_batch: 6, max_wait: Duration::from_secs(5) })?;
    let results = {
        let (c, w) = (c.clone(), w.clone());
        together(6, move |t| c.transfer(&Transfer::new(w[t % 2], w[(t + 1) % 2], dec!(1.00))))
    };
    // No poison yet: all six applied in one batch.
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let after_ok = snapshot(&l)?;
    assert_ne!(before, after_ok);
    let results = {
        let (c, w) = (c.clone(), w.clone());
        together(6, move |t| {
            let mut transfer = Transfer::new(w[0], w[1], dec!(1.00));
            if t == 3 {
                transfer = transfer.memo("boom");
            }
            c.transfer(&transfer)
        })
    };
    for r in &results {
        assert!(
            matches!(r, Err(LedgerError::BatchFailed { source }) if matches!(**source, LedgerError::Database(_))),
            "{r:?}"
        );
    }
    assert_eq!(after_ok, snapshot(&l)?, "a failed batch applied something");
    assert!(l.verify()?.is_clean());
    Ok(())
}

/// Sixteen threads on a ring of six accounts, half of them each way round, through several
/// lanes: pairs of neighbours fall in different lanes and share an account with the next pair,
/// so batches of different lanes meet on rows in the server. Each caller still gets its own receipt, money
/// is conserved, the audit is clean, the server counts no deadlock, and batches form.
fn lanes_on_a_ring(name: &str, builder: impl Fn(&str) -> wallet_ledger::LedgerBuilder, lanes: usize) -> Result<()> {
    let n = 6;
    let (l, url, _, w) = funded(name, n, dec!(1000.00))?;
    let deadlocks_before = deadlocks(&url)?;
    let c = builder(&url).pool_size(20).combining_lanes(lanes).build()?;
    assert!(format!("{c:?}").contains(&format!("{lanes} lanes")), "{c:?}");
    let watermark = last_transfer(&url)?;
    let per_thread = 40;
    let results = {
        let (c, w) = (c.clone(), w.clone());
        together(16, move |t| {
            (0..per_thread)
                .map(|i| {
                    let k = (t + i) % n;
                    let (from, to) = if t % 2 == 0 { (w[k], w[(k + 1) % n]) } else { (w[(k + 1) % n], w[k]) };
                    let sent = Transfer::new(from, to, Decimal::new((t * 100 + i + 1) as i64, 2));
                    (sent.clone(), c.transfer(&sent))
                })
                .collect::<Vec<_>>()
        })
    };
    assert_own_receipts(&results);
    // Each account's balance is what its own receipts say.
    for (i, account) in w.iter().enumerate() {
        let net: Decimal = results
            .iter()
            .flatten()
            .map(|(s, _)| {
                if s.to == *account {
                    s.amount
                } else if s.from == *account {
                    -s.amount
                } else {
                    Decimal::ZERO
                }
            })
            .sum();
        assert_eq!(l.balance(*account)?, dec!(1000.00) + net, "account {i}");
    }
    let (transfers, transactions) = transactions_after(&url, watermark)?;
    assert_eq!(transfers, 16 * per_thread as i64);
    assert!(transactions < transfers, "no batch formed: {transfers} transfers in {transactions} transactions");
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{:?}", audit.violations);
    drop((c, l));
    assert_eq!(deadlocks(&url)?, deadlocks_before);
    Ok(())
}

#[test]
fn adaptive_lanes_keep_each_caller_own_receipt_on_shared_accounts() -> Result<()> {
    lanes_on_a_ring("combine_lanes_adaptive", Ledger::builder, 3)
}

#[test]
fn tuned_lanes_keep_each_caller_own_receipt_on_shared_accounts() -> Result<()> {
    lanes_on_a_ring("combine_lanes_tuned", |url| Ledger::builder(url).combine(CombineConfig::default()), 2)
}

/// Whether a transfer in lane 1 completes (within `patience`) while a tuned ledger with
/// `lanes` lanes has a batch in lane 0 waiting for a row lock held elsewhere. Either way, once
/// the lock is released both transfers apply.
fn completes_beside_a_waiting_lane(lanes: usize, patience: Duration) -> Result<bool> {
    let (l, url, _, w) = funded(&format!("combine_lane_wait_{lanes}"), 6, dec!(100.00))?;
    let (waits, free) = pairs_in_two_lanes(&w);
    let tuned = CombineConfig { max_batch: 8, max_wait: Duration::ZERO };
    let c = Ledger::builder(&url).pool_size(4).combine(tuned).combining_lanes(lanes).build()?;
    let lock = RowLock::take(&url, waits.0)?;
    let first = {
        let c = c.clone();
        thread::spawn(move || c.transfer(&Transfer::new(waits.0, waits.1, dec!(1.00))))
    };
    await_lock_waiters(&url, 1)?;
    let (done, finished) = std::sync::mpsc::channel();
    let second = {
        let c = c.clone();
        thread::spawn(move || {
            let result = c.transfer(&Transfer::new(free.0, free.1, dec!(2.00)));
            let _ = done.send(());
            result
        })
    };
    let completed = finished.recv_timeout(patience).is_ok();
    lock.release()?;
    first.join().expect("first caller")?;
    second.join().expect("second caller")?;
    assert_eq!(l.balance(waits.1)?, dec!(101.00));
    assert_eq!(l.balance(free.1)?, dec!(102.00));
    Ok(completed)
}

#[test]
fn a_lane_waiting_for_a_row_lock_holds_up_only_its_own_calls() -> Result<()> {
    assert!(
        completes_beside_a_waiting_lane(2, Duration::from_secs(20))?,
        "the transfer in the other lane waited for the blocked lane's batch"
    );
    // The control: one lane runs one batch at a time, so the same transfer waits behind it.
    assert!(!completes_beside_a_waiting_lane(1, Duration::from_millis(500))?, "one lane let two batches run");
    Ok(())
}

#[test]
#[should_panic(expected = "combining_lanes must be 1 to")]
fn no_lanes_is_refused_by_the_setter() {
    let _ = Ledger::builder("postgresql://nobody@localhost/none").combining_lanes(0);
}

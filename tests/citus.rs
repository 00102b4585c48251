//! The ledger on a Citus cluster (a coordinator and two workers, embedded, or
//! `DATABASE_URL_CITUS`): the core behaviour with accounts on both workers, holds, concurrency,
//! ordered locks that never meet Citus's distributed deadlock detector (and a request-order
//! control that does), and an audit that stays exact while two-phase transfers commit.
//! Skipped, with a printed line, on a machine without Citus (see `citus_common`).

mod citus_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use citus_common::{citus_url, funded_on_both_workers, worker_deadlocks, workers_of, Schema};
use postgres::error::SqlState;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{AccountId, Hold, HoldState, KeyHolder, LedgerError, LockWait, NewAccount, Transfer};

macro_rules! citus_or_skip {
    ($test:expr) => {
        match citus_url($test) {
            Some(url) => url,
            None => return Ok(()),
        }
    };
}

/// Runs `threads` closures started together on a barrier and collects what they return.
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

#[test]
fn transfers_refusals_and_keys_across_workers() -> Result<()> {
    let url = citus_or_skip!("transfers_refusals_and_keys_across_workers");
    let schema = Schema::new(&url, "core");
    let l = schema.ledger(8)?;
    assert!(l.is_citus());
    let (issuer, groups) = funded_on_both_workers(&schema, &l, 2, dec!(100.00))?;
    let (a, b, c) = (groups[0][0], groups[0][1], groups[1][0]); // a, b on one worker; c on the other
    let placed = workers_of(&schema, &[a, b, c])?;
    assert_eq!(placed[&a], placed[&b]);
    assert_ne!(placed[&a], placed[&c]);

    // Same worker, and across workers (two-phase commit), both directions.
    let r = l.transfer(&Transfer::new(a, b, dec!(10.00)))?;
    assert_eq!((r.from_balance, r.to_balance, r.replayed), (dec!(90.00), dec!(110.00), false));
    let r = l.transfer(&Transfer::new(b, c, dec!(20.00)))?;
    assert_eq!((r.from_balance, r.to_balance), (dec!(90.00), dec!(120.00)));
    let r = l.transfer(&Transfer::new(c, a, dec!(5.5)))?;
    assert_eq!((r.from_balance, r.to_balance), (dec!(114.50), dec!(95.50)));

    // Refusals are typed and change nothing.
    let before = l.verify()?;
    let e = l.transfer(&Transfer::new(a, c, dec!(1000.00))).unwrap_err();
    assert!(
        matches!(e, LedgerError::InsufficientFunds { account, available, .. } if account == a && available == dec!(95.50)),
        "{e:?}"
    );
    assert!(matches!(l.transfer(&Transfer::new(a, a, dec!(1))), Err(LedgerError::SameAccount { .. })));
    let ghost = AccountId(c.0 + 1_000_000);
    assert!(
        matches!(l.transfer(&Transfer::new(a, ghost, dec!(1))), Err(LedgerError::AccountNotFound { account }) if account == ghost)
    );
    assert!(matches!(l.transfer(&Transfer::new(a, c, dec!(0.001))), Err(LedgerError::InvalidAmount { .. })));
    l.define_currency("JPY", 0)?;
    let yen = l.open_account(&NewAccount::new("JPY"))?.id;
    assert!(matches!(l.transfer(&Transfer::new(a, yen, dec!(1))), Err(LedgerError::CurrencyMismatch { .. })));
    assert_eq!(l.balance(a)?, dec!(95.50));

    // Caller keys are unique across the cluster: replay, conflict, and a refusal does not use one.
    let keyed = Transfer::new(a, c, dec!(1.00)).idempotency_key("order-1");
    let first = l.transfer(&keyed)?;
    let again = l.transfer(&keyed)?;
    assert!(again.replayed && again.transfer_id == first.transfer_id);
    assert_eq!((again.from_balance, again.to_balance), (first.from_balance, first.to_balance));
    let other = l.transfer(&Transfer::new(b, c, dec!(1.00)).idempotency_key("order-1")).unwrap_err();
    assert!(
        matches!(&other, LedgerError::IdempotencyConflict { existing: KeyHolder::Transfer(id), .. } if *id == first.transfer_id),
        "{other:?}"
    );
    let too_much = Transfer::new(b, a, dec!(500.00)).idempotency_key("order-2");
    assert!(matches!(l.transfer(&too_much), Err(LedgerError::InsufficientFunds { .. })));
    l.transfer(&Transfer::new(issuer, b, dec!(500.00)))?;
    assert!(!l.transfer(&too_much)?.replayed, "the refused call must not have consumed the key");

    // History reads one account's entries (one shard).
    let history = l.history(c, None, 10)?;
    assert_eq!(history.len(), 4);
    assert!(history.windows(2).all(|w| w[0].account_version + 1 == w[1].account_version));

    let audit = l.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    assert!(audit.transfers > before.transfers);

    // NoWait refuses at once when a worker holds the row; Timeout is refused on Citus at build.
    let mut holder = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut tx = holder.transaction()?;
    tx.query_one(&schema.sql("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE"), &[&c.0])?;
    let nowait = schema.builder(2).lock_wait(LockWait::NoWait).build()?;
    let started = Instant::now();
    let e = nowait.transfer(&Transfer::new(a, c, dec!(1))).unwrap_err();
    assert!(matches!(e, LedgerError::LockUnavailable { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    tx.rollback()?;
    nowait.transfer(&Transfer::new(a, c, dec!(1)))?;
    let timeout = schema.builder(2).lock_wait(LockWait::Timeout(Duration::from_millis(50))).build();
    assert!(matches!(timeout, Err(LedgerError::InvalidInput { field: "lock_wait", .. })), "{timeout:?}");
    Ok(())
}

#[test]
fn holds_capture_void_and_expire_across_workers() -> Result<()> {
    let url = citus_or_skip!("holds_capture_void_and_expire_across_workers");
    let schema = Schema::new(&url, "holds");
    let l = schema.ledger(4)?;
    let (_, groups) = funded_on_both_workers(&schema, &l, 1, dec!(100.00))?;
    let (a, c) = (groups[0][0], groups[1][0]);

    let h = l.hold(&Hold::new(a, c, dec!(30.00)).idempotency_key("auth-1"))?;
    assert!(!h.replayed);
    assert!(l.hold(&Hold::new(a, c, dec!(30.00)).idempotency_key("auth-1"))?.replayed);
    assert!(matches!(
        l.hold(&Hold::new(a, c, dec!(31.00)).idempotency_key("auth-1")),
        Err(LedgerError::IdempotencyConflict { .. })
    ));
    assert!(matches!(l.transfer(&Transfer::new(a, c, dec!(80.00))), Err(LedgerError::InsufficientFunds { .. })));
    let captured = l.capture(h.hold_id, Some(dec!(25.00)))?;
    assert_eq!((captured.from_balance, captured.to_balance), (dec!(75.00), dec!(125.00)));
    assert_eq!(l.account(a)?.held, dec!(0));

    let v = l.hold(&Hold::new(c, a, dec!(10.00)))?;
    l.void(v.hold_id)?;
    assert!(matches!(l.void(v.hold_id), Err(LedgerError::HoldNotPending { state: HoldState::Voided, .. })));

    for _ in 0..3 {
        l.hold(&Hold::new(a, c, dec!(1.00)).expires_in(Duration::from_millis(1)))?;
    }
    thread::sleep(Duration::from_millis(20));
    assert_eq!(l.expire_holds(100)?, 3);
    assert_eq!(l.account(a)?.held, dec!(0));
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    Ok(())
}

#[test]
fn concurrent_calls_with_one_key_make_one_transfer_and_the_last_dollar_is_spent_once() -> Result<()> {
    let url = citus_or_skip!("one_key_and_last_dollar");
    let schema = Schema::new(&url, "races");
    let l = schema.ledger(20)?;
    let (_, groups) = funded_on_both_workers(&schema, &l, 9, dec!(1.00))?;
    let (spender, sinks) = (groups[0][0], [&groups[0][1..], &groups[1][..]].concat());
    let ledger = l.clone();
    let sinks2 = sinks.clone();
    let results = together(16, move |i| ledger.transfer(&Transfer::new(spender, sinks2[i], dec!(1.00))));
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| matches!(r, Err(LedgerError::InsufficientFunds { .. }))).count();
    assert_eq!((ok, refused), (1, 15), "{results:?}");

    let (a, b) = (groups[1][1], groups[0][2]);
    // `a` may have been the sink of the one transfer above that won the race: read its balance.
    let after = l.balance(a)? - dec!(0.25);
    let ledger = l.clone();
    let receipts = together(8, move |_| ledger.transfer(&Transfer::new(a, b, dec!(0.25)).idempotency_key("pay-1")));
    let receipts: Vec<_> = receipts.into_iter().collect::<Result<_, _>>()?;
    assert!(
        receipts.iter().all(|r| r.transfer_id == receipts[0].transfer_id && r.from_balance == after),
        "{receipts:?}"
    );
    assert_eq!(receipts.iter().filter(|r| !r.replayed).count(), 1, "{receipts:?}");
    let mut conn = l.connection()?;
    let n: i64 = conn
        .client()
        .query_one(&schema.sql("SELECT count(*) FROM wallet_ledger.transfers WHERE idempotency_key = 'pay-1'"), &[])?
        .get(0);
    assert_eq!(n, 1);
    assert!(l.verify()?.is_clean());
    Ok(())
}

/// Citus commits a transaction that wrote on two workers in two steps (COMMIT PREPARED on one
/// worker, then on the other) and has no snapshot across them. A repeat of a key that arrives
/// between the two must still answer with the whole transfer, or hold: found in CI, where a
/// replay read the key on one worker and not yet the payee's entry on the other. Each round
/// races 8 calls with a fresh key on two accounts of different workers.
#[test]
fn repeats_of_a_key_racing_its_two_phase_commit_see_all_of_it() -> Result<()> {
    let url = citus_or_skip!("repeats_of_a_key_racing_its_two_phase_commit_see_all_of_it");
    let schema = Schema::new(&url, "repeats");
    let l = schema.ledger(12)?;
    let (_, groups) = funded_on_both_workers(&schema, &l, 1, dec!(100.00))?;
    let (a, b) = (groups[0][0], groups[1][0]);
    for round in 0..40 {
        let (from, to) = if round % 2 == 0 { (a, b) } else { (b, a) };
        let (ledger, key) = (l.clone(), format!("repeat-{round}"));
        let receipts =
            together(8, move |_| ledger.transfer(&Transfer::new(from, to, dec!(0.01)).idempotency_key(key.as_str())));
        let receipts: Vec<_> = receipts.into_iter().collect::<Result<_, _>>()?;
        assert_eq!(receipts.iter().filter(|r| !r.replayed).count(), 1, "round {round}: {receipts:?}");
        let r0 = &receipts[0];
        assert!(
            receipts
                .iter()
                .all(|r| (r.transfer_id, r.from_balance, r.to_balance)
                    == (r0.transfer_id, r0.from_balance, r0.to_balance)),
            "round {round}: {receipts:?}"
        );
        assert_eq!(r0.from_balance + r0.to_balance, dec!(200.00), "round {round}: {receipts:?}");
    }
    for round in 0..20 {
        // Every caller voids the hold its receipt names: one void applies, the others find the
        // hold voided; none may find no hold at all.
        let (ledger, key) = (l.clone(), format!("auth-{round}"));
        let voids = together(6, move |_| {
            let h = ledger.hold(&Hold::new(a, b, dec!(0.01)).idempotency_key(key.as_str()))?;
            ledger.void(h.hold_id).map(|()| h.hold_id)
        });
        let applied = voids.iter().filter(|v| v.is_ok()).count();
        let voided = voids
            .iter()
            .filter(|v| matches!(v, Err(LedgerError::HoldNotPending { state: HoldState::Voided, .. })))
            .count();
        assert_eq!((applied, voided), (1, 5), "round {round}: {voids:?}");
    }
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    Ok(())
}

/// Four accounts alternating between the workers, so that every neighbour on the ring is on the
/// other worker: any wait cycle among them is a distributed one.
fn ring(groups: &[Vec<AccountId>]) -> Vec<AccountId> {
    vec![groups[0][0], groups[1][0], groups[0][1], groups[1][1]]
}

/// Transfers around the ring and back, in both directions, from 8 threads.
fn ring_moves(accounts: &[AccountId], thread: usize, i: usize) -> (AccountId, AccountId, Decimal) {
    let n = accounts.len();
    let from = (thread + i) % n;
    let step = if (thread + i) % 2 == 0 { 1 } else { n - 1 };
    (accounts[from], accounts[(from + step) % n], Decimal::new(((thread * 7 + i) % 50 + 1) as i64, 2))
}

#[test]
fn ordered_locks_never_deadlock_across_workers() -> Result<()> {
    let url = citus_or_skip!("ordered_locks_never_deadlock_across_workers");
    let schema = Schema::new(&url, "rings");
    let setup = schema.ledger(4)?;
    let (_, groups) = funded_on_both_workers(&schema, &setup, 2, dec!(5.00))?;
    let accounts = ring(&groups);
    let before = worker_deadlocks(&url)?;
    // No retries: a deadlock (local or distributed) would surface as an error here.
    let l = schema.builder(10).max_retries(0).build()?;
    let ledger = l.clone();
    let ring2 = accounts.clone();
    let outcomes = together(8, move |t| {
        let (mut ok, mut refused) = (0, 0);
        for i in 0..60 {
            let (from, to, amount) = ring_moves(&ring2, t, i);
            match ledger.transfer(&Transfer::new(from, to, amount)) {
                Ok(_) => ok += 1,
                Err(LedgerError::InsufficientFunds { .. }) => refused += 1,
                Err(e) => panic!("unexpected error (a deadlock?): {e:?}"),
            }
        }
        (ok, refused)
    });
    let ok: usize = outcomes.iter().map(|o| o.0).sum();
    assert!(ok > 200, "too few transfers went through to prove anything: {outcomes:?}");
    assert_eq!(l.stats().retries, 0);
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    let total: Decimal = accounts.iter().map(|a| l.balance(*a).unwrap()).sum();
    assert_eq!(total, dec!(20.00));
    drop(l);
    assert_eq!(worker_deadlocks(&url)?, before, "a worker counted deadlocks under ordered locking");
    Ok(())
}

/// The control: the same moves, each row locked with its own statement in request order, in a
/// client-side transaction through the coordinator. Citus's distributed deadlock detector must
/// cancel one, which shows the test above is able to fail.
#[test]
fn control_request_order_locking_hits_the_distributed_deadlock_detector() -> Result<()> {
    let url = citus_or_skip!("control_request_order_locking_hits_the_distributed_deadlock_detector");
    let schema = Schema::new(&url, "rings_control");
    let setup = schema.ledger(4)?;
    let (_, groups) = funded_on_both_workers(&schema, &setup, 2, dec!(5.00))?;
    drop(setup);
    let accounts = ring(&groups);
    let lock = schema.sql("SELECT balance FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE");
    let update = schema.sql("UPDATE wallet_ledger.accounts SET balance = balance + $2 WHERE id = $1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stop = Arc::new(AtomicBool::new(false));
    let messages = together(8, move |t| {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let mut seen = Vec::new();
        for i in 0.. {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                break;
            }
            let (from, to, amount) = ring_moves(&accounts, t, i);
            let result = (|| -> Result<(), postgres::Error> {
                let mut tx = client.transaction()?;
                let balance: Decimal = tx.query_one(&lock, &[&from.0])?.get(0);
                tx.query_one(&lock, &[&to.0])?;
                if balance >= amount {
                    tx.execute(&update, &[&from.0, &-amount])?;
                    tx.execute(&update, &[&to.0, &amount])?;
                }
                tx.commit()
            })();
            match result {
                Ok(()) => {}
                Err(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {
                    seen.push(e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default());
                    stop.store(true, Ordering::Relaxed);
                }
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        seen
    });
    let seen: Vec<String> = messages.into_iter().flatten().collect();
    assert!(!seen.is_empty(), "request-order locking never deadlocked across workers in 30 s");
    assert!(
        seen.iter().any(|m| m.contains("distributed deadlock")),
        "deadlocks were not Citus's distributed ones: {seen:?}"
    );
    Ok(())
}

/// The audit runs while cross-worker transfers commit and is clean every time; a plain
/// multi-shard read of the same moment (no gate) sees half-committed transfers, which shows what
/// the gate is for.
#[test]
fn verify_is_exact_while_two_phase_transfers_commit() -> Result<()> {
    let url = citus_or_skip!("verify_is_exact_while_two_phase_transfers_commit");
    let schema = Schema::new(&url, "audit_live");
    let l = schema.ledger(8)?;
    let (_, groups) = funded_on_both_workers(&schema, &l, 3, dec!(1000.00))?;
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (l, groups, stop, moved) = (l.clone(), groups.clone(), stop.clone(), moved.clone());
            thread::spawn(move || -> Result<()> {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let (from, to) = (groups[t % 2][i % 3], groups[(t + 1) % 2][(i + t) % 3]);
                    l.transfer(&Transfer::new(from, to, dec!(0.01)))?;
                    moved.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    let mut audits = 0;
    let started = Instant::now();
    while audits < 12 && started.elapsed() < Duration::from_secs(60) {
        let audit = l.verify()?;
        assert!(audit.is_clean(), "audit {audits} while transfers ran: {audit:?}");
        audits += 1;
        thread::sleep(Duration::from_millis(50));
    }
    // The control: the conservation sum read without the gate, in one multi-shard statement.
    let mut raw = postgres::Client::connect(&url, postgres::NoTls)?;
    let sum_sql = schema.sql("SELECT sum(balance) FROM wallet_ledger.accounts");
    let (mut torn, mut reads) = (0, 0);
    let control_started = Instant::now();
    while torn == 0 && control_started.elapsed() < Duration::from_secs(30) {
        let sum: Decimal = raw.query_one(&sum_sql, &[])?.get(0);
        reads += 1;
        if !sum.is_zero() {
            torn += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer panicked")?;
    }
    let moved = moved.load(Ordering::Relaxed);
    eprintln!("{audits} clean audits while {moved} transfers ran; ungated sum torn after {reads} reads");
    assert!(audits >= 5, "only {audits} audits ran");
    assert!(moved > 100, "only {moved} transfers ran beside the audits");
    assert!(torn > 0, "no ungated read saw a half-committed transfer in {reads} reads (the control proves nothing)");
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn batches_postings_and_the_combiner_are_refused_with_a_typed_error() -> Result<()> {
    let url = citus_or_skip!("batches_postings_and_the_combiner_are_refused");
    let schema = Schema::new(&url, "unsupported");
    let l = schema.ledger(2)?;
    let (_issuer, groups) = funded_on_both_workers(&schema, &l, 1, dec!(10.00))?;
    let (a, c) = (groups[0][0], groups[1][0]);
    let batch = l.transfer_batch(&[Transfer::new(a, c, dec!(1)), Transfer::new(c, a, dec!(1))]);
    assert!(matches!(batch, Err(LedgerError::Unsupported { operation: "transfer_batch", .. })), "{batch:?}");
    let posting = wallet_ledger::Posting::new().leg(a, dec!(-1)).leg(c, dec!(1));
    let posted = l.post(&posting);
    assert!(matches!(posted, Err(LedgerError::Unsupported { operation: "post", .. })), "{posted:?}");
    let combined = schema.builder(2).combine(wallet_ledger::CombineConfig::default()).build();
    assert!(matches!(combined, Err(LedgerError::Unsupported { operation: "combine", .. })), "{combined:?}");
    // Nothing moved.
    assert_eq!((l.balance(a)?, l.balance(c)?), (dec!(10.00), dec!(10.00)));
    assert!(l.verify()?.is_clean());
    Ok(())
}

//! The async door on real tasks and connections: the same answers and refusals as the
//! synchronous door, the caller's own pool, the `_in` forms in the caller's
//! `tokio_postgres::Transaction`, combining across tasks (each caller its own receipt, batches
//! really form), a caller whose future is dropped never half-applies anything nor wedges the
//! combiner, and lost connections are retried without applying anything twice.

mod citus_common;
mod common;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::{
    await_lock_waiters, deadlocks, funded, last_transfer, pairs_in_two_lanes, snapshot, transactions_after, RowLock,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{aio, Hold, LedgerError, LockWait, NewAccount, Transfer};

/// Runs `f` on a multi-thread runtime, as an async backend would.
fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// A synchronous call (the synchronous ledger, a `postgres` client) from inside the runtime, as
/// a backend would make it: in `block_in_place`, which the synchronous door accepts.
fn sync<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[test]
fn the_async_door_answers_and_refuses_as_the_synchronous_one() -> Result<()> {
    let (l, url, issuer, w) = funded("aio_same", 2, dec!(10.00))?;
    block_on(async {
        let ledger = aio::Ledger::connect(&url).await?;
        let (a, b) = (w[0], w[1]);
        let before = sync(|| snapshot(&l))?;

        let too_much = ledger.transfer(&Transfer::new(a, b, dec!(10.01))).await.unwrap_err();
        assert!(
            matches!(too_much, LedgerError::InsufficientFunds { account, available, requested }
                if account == a && available == dec!(10.00) && requested == dec!(10.01)),
            "{too_much:?}"
        );
        assert!(matches!(ledger.transfer(&Transfer::new(a, a, dec!(1))).await, Err(LedgerError::SameAccount { .. })));
        assert!(matches!(
            ledger.transfer(&Transfer::new(a, wallet_ledger::AccountId(i64::MAX), dec!(1))).await,
            Err(LedgerError::AccountNotFound { .. })
        ));
        assert!(matches!(
            ledger.transfer(&Transfer::new(a, b, dec!(0.001))).await,
            Err(LedgerError::InvalidAmount { .. })
        ));
        assert_eq!(sync(|| snapshot(&l))?, before, "a refusal changed something");

        let first = ledger.transfer(&Transfer::new(a, b, dec!(2.50)).idempotency_key("k-1")).await?;
        let again = ledger.transfer(&Transfer::new(a, b, dec!(2.50)).idempotency_key("k-1")).await?;
        assert!(!first.replayed && again.replayed);
        assert_eq!(first.transfer_id, again.transfer_id);
        let conflict = ledger.transfer(&Transfer::new(a, b, dec!(2.51)).idempotency_key("k-1")).await.unwrap_err();
        assert!(matches!(conflict, LedgerError::IdempotencyConflict { .. }), "{conflict:?}");
        assert_eq!((ledger.balance(a).await?, ledger.balance(b).await?), (dec!(7.50), dec!(12.50)));
        assert_eq!(sync(|| Ok::<_, LedgerError>((l.balance(a)?, l.balance(b)?)))?, (dec!(7.50), dec!(12.50)));
        // The history of both doors is the same rows.
        assert_eq!(ledger.history(b, None, 100).await?, sync(|| l.history(b, None, 100))?);
        assert_eq!(ledger.account(issuer).await?, sync(|| l.account(issuer))?);

        // Holds and postings go through the same plans.
        let hold = ledger.hold(&Hold::new(a, b, dec!(5.00))).await?;
        assert_eq!(ledger.available(a).await?, dec!(2.50));
        let captured = ledger.capture(hold.hold_id, Some(dec!(1.00))).await?;
        assert_eq!(captured.from_balance, dec!(6.50));
        assert!(matches!(ledger.void(hold.hold_id).await, Err(LedgerError::HoldNotPending { .. })));
        let batch =
            ledger.transfer_batch(&[Transfer::new(a, b, dec!(1.00)), Transfer::new(a, b, dec!(100.00))]).await?;
        assert!(batch[0].is_ok() && matches!(batch[1], Err(LedgerError::InsufficientFunds { .. })));
        assert!(sync(|| l.verify())?.is_clean());
        Ok(())
    })
}

#[test]
fn a_ledger_on_the_callers_pool_with_its_own_settings() -> Result<()> {
    let url = common::database("aio_own_pool")?;
    block_on(async {
        let config: aio::tokio_postgres::Config = url.parse()?;
        let manager = aio::deadpool_postgres::Manager::new(config, aio::tokio_postgres::NoTls);
        let pool = aio::deadpool_postgres::Pool::builder(manager).max_size(4).build()?;
        let ledger = aio::Ledger::with_pool(pool.clone())
            .schema("payments_ledger")
            .lock_wait(LockWait::NoWait)
            .max_retries(2)
            .combining(false)
            .build()
            .await?;
        assert_eq!(ledger.schema(), "payments_ledger");
        assert_eq!(ledger.lock_wait(), LockWait::NoWait);
        ledger.define_currency("EUR", 2).await?;
        let a = ledger.open_account(&NewAccount::new("EUR").unbounded()).await?.id;
        let b = ledger.open_account(&NewAccount::new("EUR")).await?.id;
        ledger.transfer(&Transfer::new(a, b, dec!(3.00))).await?;
        // The backend's own code shares the pool, and sees the ledger's schema.
        let client = pool.get().await?;
        let row = client.query_one("SELECT balance FROM payments_ledger.accounts WHERE id = $1", &[&b.0]).await?;
        assert_eq!(row.get::<_, Decimal>(0), dec!(3.00));
        // A migrate(false) ledger on the same pool finds the schema current.
        let checked = aio::Ledger::with_pool(pool).schema("payments_ledger").migrate(false).build().await?;
        assert_eq!(checked.balance(b).await?, dec!(3.00));
        let debug = format!("{ledger:?}");
        assert!(!debug.contains("postgres://") && !debug.contains("host="), "{debug}");
        Ok(())
    })
}

#[test]
fn the_in_forms_commit_and_roll_back_with_the_callers_transaction() -> Result<()> {
    let (l, url, _, w) = funded("aio_in", 2, dec!(10.00))?;
    block_on(async {
        let ledger = aio::Ledger::connect(&url).await?;
        let (a, b) = (w[0], w[1]);
        let mut conn = ledger.connection().await?;

        let mut tx = conn.transaction().await?;
        ledger.transfer_in(&mut tx, &Transfer::new(a, b, dec!(4.00))).await?;
        tx.rollback().await?;
        assert_eq!(sync(|| l.balance(a))?, dec!(10.00), "rolled back with the caller's transaction");

        let mut tx = conn.transaction().await?;
        let refused = ledger.transfer_in(&mut tx, &Transfer::new(a, b, dec!(99.00))).await;
        assert!(matches!(refused, Err(LedgerError::InsufficientFunds { .. })), "{refused:?}");
        // The refusal rolled back its savepoint only: the transaction goes on.
        ledger.transfer_in(&mut tx, &Transfer::new(a, b, dec!(4.00))).await?;
        let hold = ledger.hold_in(&mut tx, &Hold::new(a, b, dec!(1.00))).await?;
        ledger.void_in(&mut tx, hold.hold_id).await?;
        let results = ledger.transfer_batch_in(&mut tx, &[Transfer::new(b, a, dec!(1.00))]).await?;
        assert!(results[0].is_ok());
        assert_eq!(sync(|| l.balance(a))?, dec!(10.00), "not visible before the caller's commit");
        tx.commit().await?;
        assert_eq!(sync(|| Ok::<_, LedgerError>((l.balance(a)?, l.balance(b)?)))?, (dec!(7.00), dec!(13.00)));
        assert!(sync(|| l.verify())?.is_clean());
        Ok(())
    })
}

#[test]
fn tasks_on_one_pair_are_combined_and_each_gets_its_own_receipt() -> Result<()> {
    let (sync, url, _, w) = funded("aio_combine", 2, dec!(1000.00))?;
    let deadlocks_before = deadlocks(&url)?;
    let watermark = last_transfer(&url)?;
    let (a, b) = (w[0], w[1]);
    let (tasks, per_task) = (32, 20);
    let results = block_on(async {
        let ledger = aio::Ledger::builder(&url).pool_size(8).build().await?;
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for i in 0..per_task {
                        let (from, to) = if (t + i) % 2 == 0 { (a, b) } else { (b, a) };
                        let sent = Transfer::new(from, to, Decimal::new((t * 100 + i + 1) as i64, 2));
                        let result = ledger.transfer(&sent).await;
                        out.push((sent, result));
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await?);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let mut ids = HashSet::new();
    for (sent, result) in &results {
        let r = result.as_ref().unwrap_or_else(|e| panic!("{sent:?}: {e:?}"));
        assert_eq!((r.from, r.to, r.amount, r.replayed), (sent.from, sent.to, sent.amount, false));
        assert!(ids.insert(r.transfer_id), "two callers were given transfer {}", r.transfer_id);
    }
    let (transfers, transactions) = transactions_after(&url, watermark)?;
    assert_eq!(transfers, (tasks * per_task) as i64);
    assert!(transactions < transfers / 2, "no batching: {transfers} transfers in {transactions} transactions");
    assert_eq!(sync.balance(a)? + sync.balance(b)?, dec!(2000.00));
    assert!(sync.verify()?.is_clean());
    assert_eq!(deadlocks(&url)?, deadlocks_before);
    Ok(())
}

/// With two combining lanes, a task in lane 1 completes while lane 0 is full: two calls there
/// wait for a row lock held elsewhere and two more are queued behind them (five callers are
/// too many to go alone, so with one lane the fifth would queue too).
#[test]
fn a_full_lane_holds_up_only_its_own_tasks() -> Result<()> {
    let (l, url, _, w) = funded("aio_lanes", 6, dec!(100.00))?;
    let ((a, b), free) = pairs_in_two_lanes(&w);
    let lock = RowLock::take(&url, a)?;
    block_on(async {
        let ledger = aio::Ledger::builder(&url).pool_size(6).combining_lanes(2).build().await?;
        let spawn = |from, to| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.transfer(&Transfer::new(from, to, dec!(1.00))).await })
        };
        let mut blocked = vec![spawn(a, b), spawn(a, b)];
        sync(|| await_lock_waiters(&url, 2))?;
        blocked.push(spawn(a, b));
        blocked.push(spawn(a, b));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other = spawn(free.0, free.1);
        let waited = tokio::time::timeout(Duration::from_secs(20), other).await;
        let still_blocked = blocked.iter().all(|h| !h.is_finished());
        sync(|| lock.release())?;
        let receipt =
            waited.map_err(|_| anyhow::anyhow!("the task in the other lane waited behind the full lane"))??;
        assert!(receipt.is_ok(), "{receipt:?}");
        assert!(still_blocked, "a transfer on the locked account finished while it was locked");
        for h in blocked {
            h.await??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    assert_eq!(l.balance(b)?, dec!(104.00));
    assert_eq!(l.balance(free.1)?, dec!(101.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_dropped_caller_applies_all_or_nothing_and_never_wedges_the_combiner() -> Result<()> {
    let (sync, url, _, w) = funded("aio_cancel", 4, dec!(1000.00))?;
    let tasks = 48;
    let cancelled = block_on(async {
        let ledger = aio::Ledger::builder(&url).pool_size(4).build().await?;
        let held = [ledger.connection().await?, ledger.connection().await?, ledger.connection().await?];
        drop(held); // the pool's connections are open: calls take milliseconds, not a connect
                    // Every other caller gives up after a few hundred microseconds: some before their
                    // transfer was queued or sent, some while their batch is in flight.
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let ledger = ledger.clone();
                let (from, to) = (w[t % 4], w[(t + 1) % 4]);
                tokio::spawn(async move {
                    let sent = Transfer::new(from, to, dec!(1.00)).idempotency_key(format!("cancel-{t}"));
                    if t % 2 == 0 {
                        let budget = Duration::from_micros(300 * t as u64);
                        tokio::time::timeout(budget, ledger.transfer(&sent)).await.is_err()
                    } else {
                        ledger.transfer(&sent).await.expect("an uncancelled transfer");
                        false
                    }
                })
            })
            .collect();
        let mut cancelled = 0;
        for h in handles {
            cancelled += usize::from(h.await?);
        }
        // Batches still in flight finish on their own; then the combiner must be free: a lone
        // transfer goes through at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lone = tokio::time::timeout(
            Duration::from_secs(10),
            ledger.transfer(&Transfer::new(w[0], w[1], dec!(0.01)).idempotency_key("after")),
        )
        .await;
        assert!(matches!(lone, Ok(Ok(_))), "the combiner is wedged: {lone:?}");
        Ok::<_, anyhow::Error>(cancelled)
    })?;
    // Each transfer is applied whole or not at all, whatever happened to its caller: the
    // balances are those of the transfers the ledger holds, and the audit is clean.
    let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
    let applied: i64 =
        c.query_one("SELECT count(*) FROM wallet_ledger.transfers WHERE idempotency_key LIKE 'cancel-%'", &[])?.get(0);
    assert!(applied >= (tasks / 2) as i64 && applied <= tasks as i64, "{applied} applied");
    let total: Decimal = w.iter().map(|id| sync.balance(*id)).sum::<Result<Decimal, _>>()?;
    assert_eq!(total, dec!(4000.00));
    let audit = sync.verify()?;
    assert!(audit.is_clean(), "{:?}", audit.violations);
    eprintln!("{cancelled} of {tasks} callers gave up; {applied} transfers applied");
    Ok(())
}

#[test]
fn a_connection_lost_mid_call_is_retried_and_applies_once() -> Result<()> {
    let (l, url, _, w) = funded("aio_lost", 2, dec!(10.00))?;
    block_on(async {
        let ledger = aio::Ledger::builder(&url).pool_size(2).combining(false).build().await?;
        let (a, b) = (w[0], w[1]);
        // Another session holds `a`'s row, so the transfer's statement waits in the server.
        let (locker, connection) = aio::tokio_postgres::connect(&url, aio::tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        locker
            .batch_execute(&format!("BEGIN; SELECT 1 FROM wallet_ledger.accounts WHERE id = {} FOR UPDATE", a.0))
            .await?;
        let stats_before = ledger.stats();
        let call = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.transfer(&Transfer::new(a, b, dec!(1.00)).idempotency_key("lost-once")).await }
        });
        // The server ends the waiting session: the statement was sent, its answer is lost.
        let waiting = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                       AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()";
        let pid: i32 = loop {
            if let Some(row) = locker.query_opt(waiting, &[]).await? {
                break row.get(0);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        locker.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await?;
        locker.batch_execute("ROLLBACK").await?;
        let r = call.await??;
        // The retry carried the same key: applied once, and not a replay to the caller.
        assert!(!r.replayed);
        assert!(ledger.stats().retries > stats_before.retries, "the lost answer was not retried");
        assert_eq!(sync(|| Ok::<_, LedgerError>((l.balance(a)?, l.balance(b)?)))?, (dec!(9.00), dec!(11.00)));
        assert!(sync(|| l.verify())?.is_clean());
        Ok(())
    })
}

#[test]
fn many_ledgers_share_nothing_but_the_database() -> Result<()> {
    // Two async ledgers and a synchronous one on one database, racing on one pair in opposite
    // directions: ordered locks, so no deadlock, and every unit of money accounted for.
    let (sync, url, _, w) = funded("aio_mixed", 2, dec!(100.00))?;
    let deadlocks_before = deadlocks(&url)?;
    let sync = Arc::new(sync);
    let (a, b) = (w[0], w[1]);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sync = Arc::clone(&sync);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let (from, to) = if t % 2 == 0 { (a, b) } else { (b, a) };
                    sync.transfer(&Transfer::new(from, to, dec!(0.10))).expect("sync transfer");
                }
            })
        })
        .collect();
    block_on(async {
        let one = aio::Ledger::connect(&url).await?;
        let two = aio::Ledger::builder(&url).combining(false).build().await?;
        let mut handles = Vec::new();
        for t in 0..16 {
            let ledger = if t % 2 == 0 { one.clone() } else { two.clone() };
            handles.push(tokio::spawn(async move {
                for _ in 0..25 {
                    let (from, to) = if t % 4 < 2 { (a, b) } else { (b, a) };
                    ledger.transfer(&Transfer::new(from, to, dec!(0.10))).await.expect("async transfer");
                }
            }));
        }
        for h in handles {
            h.await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    for t in threads {
        t.join().expect("a sync thread");
    }
    assert_eq!(sync.balance(a)? + sync.balance(b)?, dec!(200.00));
    assert!(sync.verify()?.is_clean());
    assert_eq!(deadlocks(&url)?, deadlocks_before);
    Ok(())
}

/// In Citus mode the async door sends the Citus statements: tasks moving money both ways
/// between two workers' accounts never deadlock and lose nothing, and what Citus mode refuses
/// is refused by the async door too, before anything is sent.
#[test]
fn in_citus_mode_async_tasks_cross_workers_and_refuse_what_citus_refuses() -> Result<()> {
    let Some(url) = citus_common::citus_url("aio_citus_transfers") else { return Ok(()) };
    let schema = citus_common::Schema::new(&url, "aio_citus_transfers");
    let l = schema.ledger(4)?;
    let (_issuer, groups) = citus_common::funded_on_both_workers(&schema, &l, 1, dec!(100.00))?;
    let (x, y) = (groups[0][0], groups[1][0]);
    block_on(async {
        let ledger = aio::Ledger::builder(&url).schema(&schema.name).pool_size(8).build().await?;
        assert!(ledger.is_citus());
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    for i in 0..10 {
                        let (from, to) = if (t + i) % 2 == 0 { (x, y) } else { (y, x) };
                        ledger.transfer(&Transfer::new(from, to, dec!(0.25))).await.expect("a cross-worker transfer");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await?;
        }
        let refused = [
            ledger.transfer_batch(&[Transfer::new(x, y, dec!(1.00))]).await.map(|_| ()),
            ledger.freeze(x).await.map(|_| ()),
            ledger.reverse(&wallet_ledger::Reversal::of(wallet_ledger::TransferId(1))).await.map(|_| ()),
            ledger.open_account(&NewAccount::new("USD").external_id("e-1")).await.map(|_| ()),
        ];
        for r in refused {
            assert!(matches!(r, Err(LedgerError::Unsupported { .. })), "{r:?}");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    assert_eq!(l.balance(x)? + l.balance(y)?, dec!(200.00));
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    Ok(())
}

//! The async door's feed, audit and write guard (`aio::Ledger::{changes, consume,
//! consumer_lag, consumers, feed_status, verify, grant_access, revoke_access}`): the same
//! answers as the synchronous door on the same database, an audit that catches a broken
//! balance, a handler failure that keeps nothing and gets the same changes again, concurrent
//! consumers of one name that never share a change, grants that bind a role, and Citus mode's
//! refusals and audit.
//!
//! The runtimes are built as `#[tokio::test]` would build them (`Builder`), since the
//! dev-dependency on tokio leaves out `macros`.

mod citus_common;
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use citus_common::{citus_url, funded_on_both_workers, Schema};
use common::funded;
use postgres::error::SqlState;
use rust_decimal_macros::dec;
use tokio::runtime::{Builder, Runtime};
use wallet_ledger::aio::{self, tokio_postgres};
use wallet_ledger::{Change, ConsumerLag, Hold, Ledger, LedgerError, Transfer, Violation};

fn runtime() -> Runtime {
    Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Every change readable now through the async door, from the start, in pages of 7.
async fn all_changes(l: &aio::Ledger) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = l.changes(cursor, 7).await?;
        if page.changes.is_empty() {
            return Ok(out);
        }
        cursor = Some(page.next);
        out.extend(page.changes);
    }
}

/// A table the consumers' handlers record each change in, counting how often it came.
fn seen_table(l: &Ledger) -> Result<()> {
    l.connection()?.client().batch_execute("CREATE TABLE seen (position bigint PRIMARY KEY, times int NOT NULL)")?;
    Ok(())
}

/// A handler that records each change in `seen`.
fn record<'a>(tx: &'a mut tokio_postgres::Transaction<'_>, changes: &'a [Change]) -> aio::HandlerFuture<'a> {
    Box::pin(async move {
        for change in changes {
            let position = change.cursor.position();
            tx.execute(
                "INSERT INTO seen VALUES ($1, 1) ON CONFLICT (position) DO UPDATE SET times = seen.times + 1",
                &[&position],
            )
            .await?;
        }
        Ok(())
    })
}

/// `seen`'s rows, by position.
fn seen(l: &Ledger) -> Result<Vec<(i64, i32)>> {
    let rows = l.connection()?.client().query("SELECT position, times FROM seen ORDER BY position", &[])?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[test]
fn the_feeds_reads_answer_as_the_synchronous_doors() -> Result<()> {
    let (l, url, _issuer, w) = funded("aio_feed_reads", 3, dec!(100.00))?;
    l.transfer(&Transfer::new(w[0], w[1], dec!(2.50)))?;
    let h = l.hold(&Hold::new(w[1], w[2], dec!(1.00)))?;
    l.capture(h.hold_id, None)?;
    // Synchronous calls are refused on a runtime's thread: each async call gets its own block_on.
    let rt = runtime();
    let a = rt.block_on(aio::Ledger::connect(&url))?;
    // Whole pages, and pages resumed from a cursor, read alike through both doors.
    let page = rt.block_on(a.changes(None, 100))?;
    assert_eq!(page, l.changes(None, 100)?);
    assert_eq!(page.changes.len(), 4 + 3 + 1 + 2, "opened, funded, transfer, hold placed and captured");
    let after = Some(page.changes[3].cursor);
    assert_eq!(rt.block_on(a.changes(after, 2))?, l.changes(after, 2)?);
    assert_eq!(rt.block_on(all_changes(&a))?, page.changes);
    assert!(rt.block_on(a.changes(Some(page.next), 10))?.changes.is_empty());

    // The feed's state (the age of the oldest open transaction is the server's clock).
    let (mine, theirs) = (rt.block_on(a.feed_status())?, l.feed_status()?);
    assert_eq!((mine.last_drawn, mine.horizon, mine.held_back), (theirs.last_drawn, theirs.horizon, theirs.held_back));
    assert_eq!(mine.horizon, page.next);

    // Lags: a name never used, then after each door consumed part of the feed.
    let fresh = rt.block_on(a.consumer_lag("never-ran"))?;
    assert_eq!((fresh.position, fresh.changes, fresh.delivered), (None, 10, 0));
    assert_eq!(rt.block_on(a.consume("a", 4, |_, _| Box::pin(async { Ok(()) })))?, 4);
    assert_eq!(l.consume("b", 100, |_, _| Ok(()))?, 10);
    let lags = |c: Vec<ConsumerLag>| -> Vec<_> {
        c.into_iter().map(|c| (c.name, c.position, c.changes, c.delivered)).collect()
    };
    assert_eq!(lags(rt.block_on(a.consumers())?), lags(l.consumers()?));
    assert_eq!(
        lags(rt.block_on(a.consumers())?),
        [("a".to_string(), Some(page.changes[3].cursor), 6, 4), ("b".to_string(), Some(page.next), 0, 10)]
    );
    let (mine, theirs) = (rt.block_on(a.consumer_lag("a"))?, l.consumer_lag("a")?);
    assert_eq!((mine.position, mine.changes, mine.updated_at), (theirs.position, theirs.changes, theirs.updated_at));

    // The checks are the synchronous door's, before anything is sent.
    assert!(matches!(rt.block_on(a.changes(None, 0)), Err(LedgerError::InvalidInput { .. })));
    assert!(matches!(rt.block_on(a.consumer_lag("")), Err(LedgerError::InvalidInput { .. })));
    let bad_name = "n".repeat(201);
    let long = rt.block_on(a.consume(&bad_name, 10, |_, _| Box::pin(async { Ok(()) })));
    assert!(matches!(long, Err(LedgerError::InvalidInput { .. })), "{long:?}");
    let zero = rt.block_on(a.consume("c", 0, |_, _| Box::pin(async { Ok(()) })));
    assert!(matches!(zero, Err(LedgerError::InvalidInput { .. })), "{zero:?}");
    assert_eq!(rt.block_on(a.consumers())?.len(), 2, "a refused consume created no consumer");
    Ok(())
}

#[test]
fn the_async_audit_answers_as_the_synchronous_one_and_catches_a_broken_balance() -> Result<()> {
    let (l, url, _issuer, w) = funded("aio_audit", 3, dec!(50.00))?;
    for i in 0..9 {
        l.transfer(&Transfer::new(w[i % 3], w[(i + 1) % 3], dec!(1.25)))?;
    }
    let rt = runtime();
    let a = rt.block_on(aio::Ledger::connect(&url))?;
    let audit = rt.block_on(a.verify())?;
    assert!(audit.is_clean(), "{audit:?}");
    assert_eq!((audit.accounts, audit.transfers, audit.entries), (4, 12, 24));
    assert_eq!(audit, l.verify()?);

    // Money made out of nothing on one account, written behind the ledger's back.
    let mut conn = l.connection()?;
    conn.client().execute("UPDATE wallet_ledger.accounts SET balance = balance + 1 WHERE id = $1", &[&w[1].0])?;
    let audit = rt.block_on(a.verify())?;
    assert!(
        audit.violations.contains(&Violation::Conservation {
            currency: "USD".into(),
            expected: dec!(0),
            actual: dec!(1.00)
        }),
        "{audit:?}"
    );
    assert!(
        audit.violations.iter().any(|v| matches!(v, Violation::BalanceMismatch { account, .. } if *account == w[1])),
        "{audit:?}"
    );
    assert_eq!(audit, l.verify()?);
    conn.client().execute("UPDATE wallet_ledger.accounts SET balance = balance - 1 WHERE id = $1", &[&w[1].0])?;
    assert!(rt.block_on(a.verify())?.is_clean());
    Ok(())
}

#[test]
fn a_failed_async_handler_keeps_nothing_and_the_same_changes_come_again() -> Result<()> {
    let (l, url, _issuer, w) = funded("aio_feed_handler", 2, dec!(10.00))?;
    l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    seen_table(&l)?;
    let total = l.changes(None, 100)?.changes.len();
    let rt = runtime();
    let a = rt.block_on(aio::Ledger::connect(&url))?;
    let offered = Arc::new(Mutex::new(Vec::new()));
    let failed = rt.block_on(a.consume("c", 100, |tx, changes| {
        let offered = offered.clone();
        Box::pin(async move {
            offered.lock().unwrap().extend(changes.iter().map(|c| c.cursor));
            record(tx, changes).await?;
            Err("the downstream is down".into())
        })
    }));
    match failed {
        Err(LedgerError::Handler { consumer, source }) => {
            assert_eq!(consumer, "c");
            assert_eq!(source.to_string(), "the downstream is down");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert!(seen(&l)?.is_empty(), "the handler's writes were rolled back");
    let lag = rt.block_on(a.consumer_lag("c"))?;
    assert_eq!((lag.position, lag.changes, lag.delivered), (None, total as u64, 0));

    // The same changes come again, and once processed, never again.
    let again = Arc::new(Mutex::new(Vec::new()));
    let processed = rt.block_on(a.consume("c", 100, |tx, changes| {
        let again = again.clone();
        Box::pin(async move {
            again.lock().unwrap().extend(changes.iter().map(|c| c.cursor));
            record(tx, changes).await
        })
    }))?;
    assert_eq!(processed, total);
    let offered = offered.lock().unwrap().clone();
    assert_eq!(offered.len(), total);
    assert_eq!(*again.lock().unwrap(), offered);
    assert_eq!(seen(&l)?, offered.iter().map(|c| (c.position(), 1)).collect::<Vec<_>>());
    assert_eq!(rt.block_on(a.consume("c", 100, record))?, 0);
    let lag = rt.block_on(a.consumer_lag("c"))?;
    assert_eq!((lag.position, lag.changes, lag.delivered), (offered.last().copied(), 0, total as u64));
    Ok(())
}

/// Four tasks consume one name while transfers commit: every change goes to exactly one of
/// them. The tasks are spawned, so `consume`'s future is `Send` with a `Send` handler.
#[test]
fn concurrent_async_consumers_of_one_name_never_share_a_change() -> Result<()> {
    let (l, url, _issuer, w) = funded("aio_feed_workers", 4, dec!(1000.00))?;
    seen_table(&l)?;
    let rt = runtime();
    let a = rt.block_on(aio::Ledger::builder(&url).pool_size(12).build())?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4u32)
        .map(|i| {
            let (a, done) = (a.clone(), done.clone());
            rt.spawn(async move {
                let mut processed = 0;
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let n = a.consume("shared", 3 + i, record).await?;
                    processed += n;
                    if n == 0 {
                        if finished && a.consumer_lag("shared").await?.changes == 0 {
                            return Ok::<_, LedgerError>(processed);
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    for i in 0..60 {
        let t = Transfer::new(w[i % 4], w[(i + 1) % 4], dec!(1.00));
        if i % 2 == 0 {
            l.transfer(&t)?;
        } else {
            rt.block_on(a.transfer(&t))?;
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut processed = 0;
    for worker in workers {
        processed += rt.block_on(worker)??;
    }
    let total = l.changes(None, 1000)?.changes.len();
    assert_eq!(total, 1 + 4 + 4 + 60);
    assert_eq!(processed, total);
    let rows = seen(&l)?;
    assert_eq!(rows.len(), total);
    assert!(rows.iter().all(|&(_, times)| times == 1), "a change was processed twice: {rows:?}");
    Ok(())
}

#[test]
fn async_grants_bind_a_role_and_revokes_take_it_back() -> Result<()> {
    let (owner, url, _issuer, w) = funded("aio_guard", 2, dec!(100.00))?;
    let db: String = owner.connection()?.client().query_one("SELECT current_database()", &[])?.get(0);
    let role = format!("{db}_app");
    owner
        .connection()?
        .client()
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'app-secret'"))?;
    let app_url = common::url_as(&url, &role, "app-secret")?;
    let result = runtime().block_on(async {
        let a = aio::Ledger::connect(&url).await?;
        a.grant_access(&role).await?;
        a.grant_access(&role).await?; // idempotent

        // The role moves money through the functions, and nothing else.
        let app = aio::Ledger::builder(&app_url).migrate(false).build().await?;
        app.transfer(&Transfer::new(w[0], w[1], dec!(5.00))).await?;
        assert_eq!(app.balance(w[1]).await?, dec!(105.00));
        let direct = app
            .connection()
            .await?
            .execute("UPDATE wallet_ledger.accounts SET balance = balance + 1 WHERE id = $1", &[&w[0].0])
            .await;
        assert!(matches!(&direct, Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)), "{direct:?}");
        // A role that does not own the ledger may not grant.
        assert!(matches!(app.grant_access(&role).await, Err(LedgerError::Database(_))));

        a.revoke_access(&role).await?;
        a.revoke_access(&role).await?; // idempotent
        let revoked = app.balance(w[1]).await;
        assert!(matches!(&revoked, Err(LedgerError::Database(_))), "{revoked:?}");

        assert!(matches!(a.grant_access("").await, Err(LedgerError::InvalidInput { field: "role", .. })));
        assert!(matches!(a.revoke_access("a\0b").await, Err(LedgerError::InvalidInput { field: "role", .. })));
        assert!(matches!(a.grant_access("no_such_role_anywhere").await, Err(LedgerError::Database(_))));
        Ok::<_, anyhow::Error>(())
    });
    let _ = owner.connection()?.client().batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"));
    result?;
    assert!(owner.verify()?.is_clean());
    Ok(())
}

/// In Citus mode the async audit takes the writers' gate and reads as the synchronous one; the
/// feed and the write guard are refused before anything is sent.
#[test]
fn in_citus_mode_the_async_audit_runs_and_the_feed_and_guard_are_refused() -> Result<()> {
    let Some(url) = citus_url("aio_citus_feed_audit") else { return Ok(()) };
    let schema = Schema::new(&url, "aio_feed_audit");
    let l = schema.ledger(4)?;
    let (_issuer, groups) = funded_on_both_workers(&schema, &l, 1, dec!(100.00))?;
    let (x, y) = (groups[0][0], groups[1][0]);
    l.transfer(&Transfer::new(x, y, dec!(3.00)))?;
    let rt = runtime();
    let a = rt.block_on(aio::Ledger::builder(&url).schema(&schema.name).citus(true).build())?;
    assert!(a.is_citus());
    rt.block_on(a.transfer(&Transfer::new(y, x, dec!(1.00))))?;
    let audit = rt.block_on(a.verify())?;
    assert!(audit.is_clean(), "{audit:?}");
    assert_eq!(audit.transfers, 4, "two fundings and two transfers");
    assert_eq!(audit, l.verify()?);

    let refused = rt.block_on(async {
        [
            a.changes(None, 10).await.map(|_| ()),
            a.consume("c", 10, |_, _| Box::pin(async { Ok(()) })).await.map(|_| ()),
            a.consumer_lag("c").await.map(|_| ()),
            a.consumers().await.map(|_| ()),
            a.feed_status().await.map(|_| ()),
            a.grant_access("someone").await,
            a.revoke_access("someone").await,
        ]
    });
    for r in refused {
        assert!(matches!(r, Err(LedgerError::Unsupported { .. })), "{r:?}");
    }
    Ok(())
}

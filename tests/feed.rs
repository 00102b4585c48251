//! The change feed (issue 18): what each change carries, the horizon that keeps a slow
//! transaction's change from being skipped, rollbacks that never appear, durable consumers
//! (exactly once across handler failures and a killed backend, one worker per page), lag and
//! the feed's state.

#[macro_use]
mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use anyhow::Result;
use common::funded;
use rust_decimal_macros::dec;
use serde_json::json;
use wallet_ledger::{
    AccountStatus, Change, ChangeKind, FeedCursor, Hold, Ledger, LedgerError, NewAccount, Posting, Reversal, Transfer,
};

/// Every change readable now, from the start.
fn all_changes(l: &Ledger) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = l.changes(cursor, 7)?;
        if page.changes.is_empty() {
            return Ok(out);
        }
        cursor = Some(page.next);
        out.extend(page.changes);
    }
}

fn kinds(changes: &[Change]) -> Vec<ChangeKind> {
    changes.iter().map(|c| c.kind).collect()
}

#[test]
fn every_operation_is_one_change_with_what_it_did() -> Result<()> {
    let (l, _url, issuer, w) = funded("feed_kinds", 3, dec!(100.00))?;
    let before = all_changes(&l)?;
    // issuer opened, 3 wallets opened, each funded
    assert_eq!(
        kinds(&before),
        [
            ChangeKind::AccountOpened,
            ChangeKind::AccountOpened,
            ChangeKind::Transfer,
            ChangeKind::AccountOpened,
            ChangeKind::Transfer,
            ChangeKind::AccountOpened,
            ChangeKind::Transfer
        ]
    );
    let from = before.last().unwrap().cursor;

    let t = l.transfer(
        &Transfer::new(w[0], w[1], dec!(10.00)).memo("rent").metadata(json!({"order": 7})).idempotency_key("k-1"),
    )?;
    let p = l.post(&Posting::new().leg(w[0], dec!(-3.00)).leg(w[1], dec!(1.00)).leg(w[2], dec!(2.00)))?;
    l.reverse(&Reversal::of(t.transfer_id).amount(dec!(4.00)))?;
    let h1 = l.hold(&Hold::new(w[2], w[0], dec!(5.00)).metadata(json!({"cart": 1})))?;
    l.capture(h1.hold_id, Some(dec!(2.00)))?;
    let h2 = l.hold(&Hold::new(w[2], w[0], dec!(1.00)))?;
    l.void(h2.hold_id)?;
    let h3 = l.hold(&Hold::new(w[2], w[0], dec!(1.00)).expires_in(Duration::from_millis(1)))?;
    thread::sleep(Duration::from_millis(20));
    assert_eq!(l.expire_holds(10)?, 1);
    l.freeze(w[1])?;
    l.freeze(w[1])?; // already frozen: nothing changed, no change
    l.unfreeze(w[1])?;
    l.set_max_balance(w[1], Some(dec!(1000.00)))?;
    let after = l.changes(Some(from), 100)?.changes;
    assert_eq!(
        kinds(&after),
        [
            ChangeKind::Transfer,
            ChangeKind::Posting,
            ChangeKind::Reversal,
            ChangeKind::HoldPlaced,
            ChangeKind::HoldCaptured,
            ChangeKind::HoldPlaced,
            ChangeKind::HoldVoided,
            ChangeKind::HoldPlaced,
            ChangeKind::HoldExpired,
            ChangeKind::StatusChanged,
            ChangeKind::StatusChanged,
            ChangeKind::LimitsChanged
        ]
    );
    for pair in after.windows(2) {
        assert!(pair[0].cursor < pair[1].cursor, "feed order");
    }

    let tc = &after[0];
    assert_eq!(tc.transfer, Some(t.transfer_id));
    assert_eq!(tc.amount, Some(dec!(10.00)));
    assert_eq!(tc.currency, "USD");
    assert_eq!(tc.memo.as_deref(), Some("rent"));
    assert_eq!(tc.metadata, Some(json!({"order": 7})));
    assert_eq!(tc.idempotency_key.as_deref(), Some("k-1"));
    let a0 = l.account(w[0])?;
    let legs: Vec<_> = tc.legs.iter().map(|g| (g.account, g.amount, g.balance)).collect();
    assert_eq!(legs, [(w[0], dec!(-10.00), dec!(90.00)), (w[1], dec!(10.00), dec!(110.00))]);
    assert_eq!(tc.leg(w[0]).unwrap().version, 2, "funding was version 1");

    assert_eq!(after[1].transfer, Some(p.transfer_id));
    assert_eq!(after[1].legs.len(), 3);
    assert_eq!(after[2].reverses, Some(t.transfer_id));
    assert_eq!(after[2].amount, Some(dec!(4.00)));

    let placed = &after[3];
    assert_eq!(placed.hold, Some(h1.hold_id));
    assert_eq!(placed.amount, Some(dec!(5.00)));
    assert_eq!(placed.metadata, Some(json!({"cart": 1})));
    assert_eq!(placed.legs.len(), 1);
    assert_eq!(placed.legs[0].account, w[2]);
    assert_eq!(placed.legs[0].amount, dec!(0));
    let captured = &after[4];
    assert_eq!(captured.hold, Some(h1.hold_id));
    assert!(captured.transfer.is_some());
    assert_eq!(captured.amount, Some(dec!(2.00)));
    assert_eq!(after[8].hold, Some(h3.hold_id));

    assert_eq!(after[9].status, Some(AccountStatus::Frozen));
    assert_eq!(after[10].status, Some(AccountStatus::Open));
    assert_eq!(after[11].max_balance, Some(dec!(1000.00)));
    assert_eq!(after[11].min_balance, Some(dec!(0)));
    // the last change of each account carries its current version and balance
    let final_w0 = after.iter().rev().find_map(|c| c.leg(w[0])).unwrap();
    let now_w0 = l.account(w[0])?;
    assert_eq!((final_w0.balance, final_w0.version), (now_w0.balance, now_w0.version));
    assert!(a0.version <= now_w0.version);
    let _ = issuer;
    Ok(())
}

#[test]
fn a_page_resumes_from_a_stored_cursor_and_limits_are_checked() -> Result<()> {
    let (l, _url, _issuer, w) = funded("feed_pages", 2, dec!(100.00))?;
    for _ in 0..10 {
        l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    }
    let everything = all_changes(&l)?;
    let first = l.changes(None, 5)?;
    assert_eq!(first.changes, everything[..5]);
    let stored = first.next.to_string();
    let second = l.changes(Some(stored.parse::<FeedCursor>()?), 5)?;
    assert_eq!(second.changes, everything[5..10]);
    let end = l.changes(Some(everything.last().unwrap().cursor), 5)?;
    assert!(end.changes.is_empty());
    assert_eq!(end.next, everything.last().unwrap().cursor, "an empty page keeps the cursor");
    refused!(l, l.changes(None, 0), LedgerError::InvalidInput { field: "limit", .. });
    refused!(l, l.consume("", 10, |_, _| Ok(())), LedgerError::InvalidInput { .. });
    refused!(l, l.consume(&"n".repeat(201), 10, |_, _| Ok(())), LedgerError::InvalidInput { .. });
    assert!(matches!("fc_x".parse::<FeedCursor>(), Err(LedgerError::InvalidInput { .. })));
    Ok(())
}

/// The outbox bug the feed exists to avoid: a change written early (a transfer inside a
/// caller's slow transaction) and committed after later changes. The feed holds its horizon
/// below the slow change until it ends, so no reader skips it; a rolled-back one never appears.
#[test]
fn a_slow_transaction_is_waited_for_and_a_rolled_back_one_never_appears() -> Result<()> {
    let (l, url, _issuer, w) = funded("feed_slow", 4, dec!(100.00))?;
    let start = all_changes(&l)?.last().unwrap().cursor;

    let mut client = postgres::Client::connect(&url.to_string(), postgres::NoTls)?;
    let mut slow = client.transaction()?;
    let slow_receipt = l.transfer_in(&mut slow, &Transfer::new(w[0], w[1], dec!(1.00)))?;
    let fast = l.transfer(&Transfer::new(w[2], w[3], dec!(1.00)))?;
    assert!(fast.transfer_id.0 > slow_receipt.transfer_id.0, "the slow one drew its position first");

    // While the slow transaction is open, neither is readable: the fast one's position lies
    // beyond the slow one's, which may still commit.
    for _ in 0..3 {
        assert!(l.changes(Some(start), 100)?.changes.is_empty());
    }
    let status = l.feed_status()?;
    assert!(status.held_back >= 1, "{status:?}");
    assert!(status.oldest_open_transaction.is_some(), "{status:?}");
    slow.commit()?;

    let page = poll_until(&l, start, 2)?;
    let ids: Vec<_> = page.iter().map(|c| c.transfer.unwrap()).collect();
    assert_eq!(ids, [slow_receipt.transfer_id, fast.transfer_id]);

    // Rolled back: its position is a gap, never a change.
    let mark = page.last().unwrap().cursor;
    let mut doomed = client.transaction()?;
    let lost = l.transfer_in(&mut doomed, &Transfer::new(w[0], w[1], dec!(1.00)))?;
    let kept = l.transfer(&Transfer::new(w[2], w[3], dec!(1.00)))?;
    doomed.rollback()?;
    let page = poll_until(&l, mark, 1)?;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].transfer, Some(kept.transfer_id));
    assert_ne!(page[0].transfer, Some(lost.transfer_id));
    Ok(())
}

/// Reads from `after` until at least `n` changes came (the horizon moves on each read).
fn poll_until(l: &Ledger, after: FeedCursor, n: usize) -> Result<Vec<Change>> {
    let mut got = Vec::new();
    let mut cursor = after;
    for _ in 0..200 {
        let page = l.changes(Some(cursor), 100)?;
        cursor = page.next;
        got.extend(page.changes);
        if got.len() >= n {
            return Ok(got);
        }
        thread::sleep(Duration::from_millis(10));
    }
    anyhow::bail!("only {} of {n} changes arrived", got.len())
}

fn seen_table(l: &Ledger) -> Result<()> {
    let mut conn = l.connection()?;
    conn.client().batch_execute("CREATE TABLE seen (position bigint PRIMARY KEY, times int NOT NULL DEFAULT 1)")?;
    Ok(())
}

/// A handler that records each change it processes in the same database, counting repeats.
fn record(tx: &mut postgres::Transaction<'_>, changes: &[Change]) -> Result<(), wallet_ledger::HandlerError> {
    for c in changes {
        let position: i64 = c.cursor.position();
        tx.execute(
            "INSERT INTO seen (position) VALUES ($1) ON CONFLICT (position) DO UPDATE SET times = seen.times + 1",
            &[&position],
        )?;
    }
    Ok(())
}

fn seen(l: &Ledger) -> Result<Vec<(i64, i32)>> {
    let mut conn = l.connection()?;
    Ok(conn
        .client()
        .query("SELECT position, times FROM seen ORDER BY position", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

#[test]
fn a_failed_handler_changes_nothing_and_the_changes_come_again() -> Result<()> {
    let (l, _url, _issuer, w) = funded("feed_handler_error", 2, dec!(100.00))?;
    seen_table(&l)?;
    l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    let total = all_changes(&l)?.len();
    let failed = l.consume("c", 100, |tx, changes| {
        record(tx, changes)?;
        Err("downstream is down".into())
    });
    assert!(matches!(&failed, Err(LedgerError::Handler { consumer, .. }) if consumer == "c"), "{failed:?}");
    assert!(seen(&l)?.is_empty(), "the handler's writes were rolled back");
    assert_eq!(l.consumer_lag("c")?.changes as usize, total);
    assert_eq!(l.consume("c", 100, record)?, total);
    assert_eq!(l.consume("c", 100, record)?, 0);
    assert!(seen(&l)?.iter().all(|&(_, times)| times == 1));
    assert_eq!(seen(&l)?.len(), total);
    let lag = l.consumer_lag("c")?;
    assert_eq!((lag.changes, lag.delivered, lag.behind), (0, total as u64, Duration::ZERO));
    assert_eq!(lag.position, Some(all_changes(&l)?.last().unwrap().cursor));
    Ok(())
}

/// The consumer's backend is killed in the middle of its handler: the handler's writes and the
/// position roll back together, and the next call processes the same changes once.
#[test]
fn a_killed_backend_mid_handler_loses_nothing_and_repeats_nothing() -> Result<()> {
    let (l, url, _issuer, w) = funded("feed_kill", 3, dec!(100.00))?;
    seen_table(&l)?;
    for _ in 0..5 {
        l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    }
    let total = all_changes(&l)?.len();
    let killed = l.consume("k", 4, |tx, changes| {
        record(tx, changes)?;
        let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[])?.get(0);
        let mut other = postgres::Client::connect(&url.to_string(), postgres::NoTls)?;
        other.execute("SELECT pg_terminate_backend($1)", &[&pid])?;
        thread::sleep(Duration::from_millis(100));
        tx.execute("SELECT 1", &[])?; // the connection is gone: this fails
        Ok(())
    });
    assert!(killed.is_err(), "{killed:?}");
    assert!(seen(&l)?.is_empty());
    let mut done = 0;
    while done < total {
        let n = l.consume("k", 4, record)?;
        assert!(n > 0);
        done += n;
    }
    let rows = seen(&l)?;
    assert_eq!(rows.len(), total);
    assert!(rows.iter().all(|&(_, times)| times == 1), "{rows:?}");
    Ok(())
}

/// Several workers on one consumer name: every change is processed by exactly one of them.
#[test]
fn workers_of_one_consumer_never_share_a_change() -> Result<()> {
    let (l, _url, _issuer, w) = funded("feed_workers", 4, dec!(1000.00))?;
    seen_table(&l)?;
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(5));
    let mut handles = Vec::new();
    for i in 0..4 {
        let (l, barrier, done) = (l.clone(), barrier.clone(), writers_done.clone());
        handles.push(thread::spawn(move || -> Result<usize> {
            barrier.wait();
            let mut processed = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let n = l.consume("shared", 3 + i, record)?;
                processed += n;
                if n == 0 {
                    if finished && l.consumer_lag("shared")?.changes == 0 {
                        return Ok(processed);
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            }
        }));
    }
    barrier.wait();
    for i in 0..60 {
        l.transfer(&Transfer::new(w[i % 4], w[(i + 1) % 4], dec!(1.00)))?;
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let processed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum::<Result<usize>>()?;
    let total = all_changes(&l)?.len();
    assert_eq!(processed, total);
    let rows = seen(&l)?;
    assert_eq!(rows.len(), total);
    assert!(rows.iter().all(|&(_, times)| times == 1));
    Ok(())
}

#[test]
fn consumers_are_listed_with_their_lag() -> Result<()> {
    let (l, _url, _issuer, w) = funded("feed_lag", 2, dec!(100.00))?;
    let fresh = l.consumer_lag("never-ran")?;
    assert_eq!(fresh.position, None);
    assert_eq!(fresh.changes, 5);
    assert!(fresh.behind > Duration::ZERO);
    assert_eq!(l.consume("a", 2, |_, _| Ok(()))?, 2);
    assert_eq!(l.consume("b", 100, |_, _| Ok(()))?, 5);
    l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    let listed: Vec<_> = l.consumers()?.into_iter().map(|c| (c.name, c.changes, c.delivered)).collect();
    assert_eq!(listed, [("a".to_string(), 4, 2), ("b".to_string(), 1, 5)]);
    Ok(())
}

/// A change's legs always read back as the account's entries say, and each account's changes
/// come in its version order.
#[test]
fn each_accounts_changes_follow_its_versions() -> Result<()> {
    let (l, _url, _issuer, w) = funded("feed_versions", 5, dec!(1000.00))?;
    let mut handles = Vec::new();
    for t in 0..4usize {
        let (l, w) = (l.clone(), w.clone());
        handles.push(thread::spawn(move || -> Result<()> {
            for i in 0..50usize {
                let (a, b) = (w[(t + i) % 5], w[(t + 2 * i + 1) % 5]);
                if a != b {
                    l.transfer(&Transfer::new(a, b, dec!(0.01)))?;
                }
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join().unwrap()?;
    }
    let changes = all_changes(&l)?;
    let mut last = std::collections::HashMap::new();
    for c in changes.iter().filter(|c| c.kind.moves_money()) {
        for leg in &c.legs {
            let prev = last.insert(leg.account, leg.version).unwrap_or(0);
            assert_eq!(leg.version, prev + 1, "account {:?} jumped from version {prev}", leg.account);
        }
    }
    for id in w {
        assert_eq!(last[&id], l.account(id)?.version);
    }
    Ok(())
}

#[test]
fn an_account_opened_with_data_and_closed_is_in_the_feed() -> Result<()> {
    let (l, _url) = common::ledger("feed_accounts")?;
    l.define_currency("EUR", 2)?;
    let a = l.open_account(
        &NewAccount::new("EUR").external_id("user-1").metadata(json!({"tier": "gold"})).max_balance(dec!(50.00)),
    )?;
    l.set_min_balance(a.id, Some(dec!(-10.00)))?;
    l.close(a.id)?;
    let changes = all_changes(&l)?;
    assert_eq!(kinds(&changes), [ChangeKind::AccountOpened, ChangeKind::LimitsChanged, ChangeKind::StatusChanged]);
    assert_eq!(changes[0].currency, "EUR");
    assert_eq!(changes[0].max_balance, Some(dec!(50.00)));
    assert_eq!(changes[0].status, Some(AccountStatus::Open));
    assert_eq!(changes[1].min_balance, Some(dec!(-10.00)));
    assert_eq!(changes[2].status, Some(AccountStatus::Closed));
    assert!(changes.iter().all(|c| c.legs == changes[0].legs));
    assert!(changes.iter().all(|c| c.metadata == Some(json!({"tier": "gold"}))));
    Ok(())
}

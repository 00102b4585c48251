//! The feed's threaded property (issue 18): writers (transfers, batches, combined transfers,
//! postings, holds, `transfer_in` with random sleeps before commit or rollback) race readers of
//! `changes` and the workers of a durable consumer; once the writers stop and the readers drain,
//! every committed change was delivered to each reader exactly once, in feed order and each
//! account's version order, and nothing rolled back was. The broken control (an id-order
//! outbox without the horizon) is caught losing a change.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Result};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::testkit::config;
use wallet_ledger::testkit::feed::{check_feed, FeedFinding, FeedLog, FeedProperty, FeedReader};
use wallet_ledger::{AccountId, Change, CombineConfig, FeedCursor, Hold, Ledger, Posting, Transfer, TransferId};

const ACCOUNTS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    Transfer(usize, usize, i64),
    Combined(usize, usize, i64),
    Batch(Vec<(usize, usize, i64)>),
    Posting(usize, usize, usize),
    /// `transfer_in` in a caller's transaction that sleeps before it commits (or rolls back).
    Slow {
        from: usize,
        to: usize,
        sleep_ms: u64,
        commit: bool,
    },
    HoldThen {
        from: usize,
        to: usize,
        capture: bool,
    },
}

fn pair() -> impl Strategy<Value = (usize, usize)> {
    (0..ACCOUNTS, 1..ACCOUNTS).prop_map(|(a, d)| (a, (a + d) % ACCOUNTS))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (pair(), 1..500i64).prop_map(|((a, b), c)| Op::Transfer(a, b, c)),
        2 => (pair(), 1..500i64).prop_map(|((a, b), c)| Op::Combined(a, b, c)),
        1 => prop::collection::vec((pair(), 1..500i64).prop_map(|((a, b), c)| (a, b, c)), 1..5).prop_map(Op::Batch),
        1 => (pair(), 0..ACCOUNTS).prop_map(|((a, b), c)| Op::Posting(a, b, c)),
        2 => (pair(), 0..60u64, prop::bool::weighted(0.7))
            .prop_map(|((from, to), sleep_ms, commit)| Op::Slow { from, to, sleep_ms, commit }),
        1 => (pair(), any::<bool>()).prop_map(|((from, to), capture)| Op::HoldThen { from, to, capture }),
    ]
}

fn workload() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 3..12), 2..5)
}

fn cents(c: i64) -> Decimal {
    Decimal::new(c, 2)
}

/// Runs one writer's ops; returns the transfers it rolled back.
fn write(l: &Ledger, combined: &Ledger, url: &str, w: &[AccountId], ops: &[Op]) -> Result<Vec<TransferId>> {
    let mut rolled_back = Vec::new();
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    for op in ops {
        match op {
            Op::Transfer(a, b, c) => drop(l.transfer(&Transfer::new(w[*a], w[*b], cents(*c)))),
            Op::Combined(a, b, c) => drop(combined.transfer(&Transfer::new(w[*a], w[*b], cents(*c)))),
            Op::Batch(items) => {
                let items: Vec<_> = items.iter().map(|(a, b, c)| Transfer::new(w[*a], w[*b], cents(*c))).collect();
                drop(l.transfer_batch(&items));
            }
            Op::Posting(a, b, c) => {
                let mut p = Posting::new().leg(w[*a], dec!(-0.03)).leg(w[*b], dec!(0.01));
                p = if *c == *a || *c == *b {
                    Posting::new().leg(w[*a], dec!(-0.02)).leg(w[*b], dec!(0.02))
                } else {
                    p.leg(w[*c], dec!(0.02))
                };
                drop(l.post(&p));
            }
            Op::Slow { from, to, sleep_ms, commit } => {
                let mut tx = client.transaction()?;
                let receipt = l.transfer_in(&mut tx, &Transfer::new(w[*from], w[*to], dec!(0.05)));
                thread::sleep(Duration::from_millis(*sleep_ms));
                match (receipt, commit) {
                    (Ok(r), false) => {
                        tx.rollback()?;
                        rolled_back.push(r.transfer_id);
                    }
                    _ => tx.commit()?,
                }
            }
            Op::HoldThen { from, to, capture } => {
                if let Ok(h) = l.hold(&Hold::new(w[*from], w[*to], dec!(0.10))) {
                    if *capture {
                        drop(l.capture(h.hold_id, None));
                    } else {
                        drop(l.void(h.hold_id));
                    }
                }
            }
        }
    }
    Ok(rolled_back)
}

/// Reads with `reader` until `stop` is set and the feed is drained up to `last`.
fn read(
    l: &Ledger,
    reader: FeedReader,
    name: &str,
    stop: &AtomicBool,
    last: &Mutex<i64>,
    reached: &AtomicI64,
) -> Result<FeedLog> {
    let mut log = FeedLog::new(name);
    let mut cursor: Option<FeedCursor> = None;
    let mut idle = 0;
    loop {
        let page = reader.changes(l, cursor, 7)?;
        let empty = page.changes.is_empty();
        cursor = Some(page.next);
        log.delivered.extend(page.changes);
        reached.store(log.delivered.last().map_or(0, position), Ordering::SeqCst);
        if empty {
            if stop.load(Ordering::SeqCst) {
                let reached = log.delivered.last().map_or(0, |c: &Change| position(c));
                if reached >= *last.lock().unwrap() {
                    return Ok(log);
                }
                idle += 1;
                if idle > 2000 {
                    bail!("{name} stuck at {reached}");
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn position(c: &Change) -> i64 {
    c.cursor.position()
}

/// Two workers of one durable consumer, logging in the order they commit.
fn consume(l: &Ledger, stop: &AtomicBool, log: &Mutex<FeedLog>) -> Result<()> {
    loop {
        let n = l.consume("prop", 5, |_, changes| {
            log.lock().unwrap().delivered.extend_from_slice(changes);
            Ok(())
        })?;
        if n == 0 {
            if stop.load(Ordering::SeqCst) && l.consumer_lag("prop")?.changes == 0 {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn run_case(writers: &[Vec<Op>], label: &str) -> Result<Vec<FeedFinding>> {
    let (l, url, _issuer, w) = common::funded(label, ACCOUNTS, dec!(1000.00))?;
    let combined = Ledger::builder(url.as_str())
        .combine(CombineConfig { max_batch: 8, max_wait: Duration::from_millis(1) })
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(Mutex::new(i64::MAX));
    let consumed = Arc::new(Mutex::new(FeedLog::new("consumer prop")));
    thread::scope(|s| -> Result<Vec<FeedFinding>> {
        let readers: Vec<_> = (0..2)
            .map(|i| {
                let (l, stop, last) = (&l, &stop, &last);
                s.spawn(move || read(l, FeedReader::Ledger, &format!("reader {i}"), stop, last, &AtomicI64::new(0)))
            })
            .collect();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (l, stop, consumed) = (&l, &stop, &consumed);
                s.spawn(move || consume(l, stop, consumed))
            })
            .collect();
        let writing: Vec<_> = writers
            .iter()
            .map(|ops| {
                let (l, combined, url, w) = (&l, &combined, url.as_str(), &w);
                s.spawn(move || write(l, combined, url, w, ops))
            })
            .collect();
        let mut rolled_back = Vec::new();
        for h in writing {
            rolled_back.extend(h.join().expect("writer")?);
        }
        let mut conn = l.connection()?;
        let max: Option<i64> = conn
            .client()
            .query_one(
                "SELECT greatest((SELECT max(id) FROM wallet_ledger.transfers), (SELECT max(position) FROM wallet_ledger.feed_events))",
                &[],
            )?
            .get(0);
        drop(conn);
        *last.lock().unwrap() = max.unwrap_or(0);
        stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        for h in readers {
            logs.push(h.join().expect("reader")?);
        }
        for h in workers {
            h.join().expect("consumer")?;
        }
        logs.push(consumed.lock().unwrap().clone());
        Ok(check_feed(&l, &logs, &rolled_back)?)
    })
}

proptest! {
    #![proptest_config(config(3))]
    #[test]
    fn every_committed_change_reaches_every_reader_once_in_order(writers in workload()) {
        let findings = run_case(&writers, "feed_prop").map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        prop_assert!(findings.is_empty(), "{:#?}", findings);
    }
}

/// The control: an outbox read by id order, racing a transfer whose caller's transaction
/// commits after later ones. The same checker that passes the ledger's feed on the same race
/// finds the change it lost.
#[test]
fn the_id_order_outbox_is_caught_losing_a_change() -> Result<()> {
    for (reader, label) in [(FeedReader::IdOrder, "feed_control"), (FeedReader::Ledger, "feed_control_ledger")] {
        let (l, url, _issuer, w) = common::funded(label, 4, dec!(100.00))?;
        let stop = AtomicBool::new(false);
        let last = Mutex::new(i64::MAX);
        let reached = AtomicI64::new(0);
        let findings = thread::scope(|s| -> Result<Vec<FeedFinding>> {
            let reading = s.spawn(|| read(&l, reader, "outbox", &stop, &last, &reached));
            let mut client = postgres::Client::connect(url.as_str(), postgres::NoTls)?;
            let mut slow = client.transaction()?;
            l.transfer_in(&mut slow, &Transfer::new(w[0], w[1], dec!(1.00)))?;
            let fast = l.transfer(&Transfer::new(w[2], w[3], dec!(1.00)))?.transfer_id.0;
            // Commit the slow one only once the reader has read past it (the control does; the
            // ledger's feed does not, whatever the wait).
            let started = std::time::Instant::now();
            while reached.load(Ordering::SeqCst) < fast && started.elapsed() < Duration::from_millis(500) {
                thread::sleep(Duration::from_millis(5));
            }
            let passed = reached.load(Ordering::SeqCst) >= fast;
            slow.commit()?;
            l.transfer(&Transfer::new(w[2], w[3], dec!(1.00)))?;
            let mut conn = l.connection()?;
            *last.lock().unwrap() = conn.client().query_one("SELECT max(id) FROM wallet_ledger.transfers", &[])?.get(0);
            drop(conn);
            stop.store(true, Ordering::SeqCst);
            let log = reading.join().expect("reader")?;
            match reader {
                FeedReader::IdOrder => assert!(passed, "the control read past the open transfer"),
                _ => assert!(!passed, "the feed read past an open transfer"),
            }
            Ok(check_feed(&l, &[log], &[])?)
        })?;
        match reader {
            FeedReader::IdOrder => assert!(
                findings.iter().any(|f| f.property == FeedProperty::NothingLost),
                "the control lost nothing: {findings:?}"
            ),
            _ => assert!(findings.is_empty(), "{findings:?}"),
        }
    }
    Ok(())
}

/// Each of the checker's other properties, shown failing on a doctored log: a change delivered
/// twice, two changes swapped, a change that was never committed, one rolled back.
#[test]
fn the_checker_catches_repeats_reordering_and_rollbacks() -> Result<()> {
    let (l, _url, _issuer, w) = common::funded("feed_checker", 2, dec!(100.00))?;
    l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    l.transfer(&Transfer::new(w[1], w[0], dec!(1.00)))?;
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = l.changes(cursor, 100)?;
        if page.changes.is_empty() {
            break;
        }
        cursor = Some(page.next);
        all.extend(page.changes);
    }
    let clean = FeedLog { reader: "clean".into(), delivered: all.clone() };
    assert!(check_feed(&l, &[clean], &[])?.is_empty());

    let properties = |log: Vec<Change>, rolled_back: &[TransferId]| -> Result<Vec<FeedProperty>> {
        let found = check_feed(&l, &[FeedLog { reader: "doctored".into(), delivered: log }], rolled_back)?;
        Ok(found.into_iter().map(|f| f.property).collect())
    };
    let mut twice = all.clone();
    twice.push(all[all.len() - 1].clone());
    assert!(properties(twice, &[])?.contains(&FeedProperty::ExactlyOnce));

    let mut swapped = all.clone();
    let n = swapped.len();
    swapped.swap(n - 1, n - 2);
    assert!(properties(swapped, &[])?.contains(&FeedProperty::InOrder));

    let last = all[all.len() - 1].clone();
    let stranger: Change = {
        let mut page = l.changes(None, 1)?.changes;
        let mut c = page.remove(0);
        c.cursor = format!("fc_{}", position(&last) + 1000).parse()?;
        c
    };
    let mut invented = all.clone();
    invented.push(stranger);
    assert!(properties(invented, &[])?.contains(&FeedProperty::NoRollback));

    let rolled = last.transfer.expect("a transfer");
    assert!(properties(all.clone(), &[rolled])?.contains(&FeedProperty::NoRollback));
    Ok(())
}

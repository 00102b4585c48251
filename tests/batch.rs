//! `transfer_batch`: one transaction, per-item outcomes, per-item idempotency, limits, the
//! caller's-transaction form, and concurrency on real threads and connections.

#[macro_use]
mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use anyhow::Result;
use common::{deadlocks, funded, snapshot};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::limits::BATCH_ITEMS_MAX;
use wallet_ledger::{AccountId, KeyHolder, Ledger, LedgerError, LockWait, NewAccount, Transfer};

#[test]
fn an_empty_batch_returns_nothing_and_changes_nothing() -> Result<()> {
    let (l, _, _, _) = funded("batch_empty", 2, dec!(10.00))?;
    let before = snapshot(&l)?;
    assert!(l.transfer_batch(&[])?.is_empty());
    assert_eq!(before, snapshot(&l)?);
    Ok(())
}

#[test]
fn each_item_has_its_own_outcome_in_order() -> Result<()> {
    let (l, _, issuer, w) = funded("batch_outcomes", 3, dec!(10.00))?;
    l.define_currency("EUR", 2)?;
    let eur = l.open_account(&NewAccount::new("EUR"))?.id;
    let ghost = AccountId(987_654);
    let items = [
        Transfer::new(w[0], w[1], dec!(4.00)),                      // 0 ok: w0 6, w1 14
        Transfer::new(w[0], w[2], dec!(7.00)),                      // 1 refused: w0 has 6
        Transfer::new(w[1], w[0], dec!(1.00)).idempotency_key("k"), // 2 ok: w1 13, w0 7
        Transfer::new(w[0], w[2], dec!(7.00)),                      // 3 ok now: w0 0, w2 17
        Transfer::new(w[1], w[0], dec!(1.00)).idempotency_key("k"), // 4 replays 2
        Transfer::new(w[1], w[0], dec!(2.00)).idempotency_key("k"), // 5 conflict with 2
        Transfer::new(w[1], w[1], dec!(1.00)),                      // 6 same account
        Transfer::new(ghost, w[1], dec!(1.00)),                     // 7 unknown
        Transfer::new(w[1], eur, dec!(1.00)),                       // 8 currency mismatch
        Transfer::new(w[1], w[2], dec!(0.001)),                     // 9 scale
        Transfer::new(w[1], w[2], dec!(-1)),                        // 10 not positive
        Transfer::new(issuer, w[0], dec!(5.00)).memo("top-up"),     // 11 ok: w0 5
    ];
    let before = l.stats();
    let r = l.transfer_batch(&items)?;
    assert_eq!(r.len(), items.len());
    let ok = |i: usize| r[i].as_ref().unwrap_or_else(|e| panic!("item {i}: {e:?}"));
    assert_eq!((ok(0).from_balance, ok(0).to_balance, ok(0).replayed), (dec!(6.00), dec!(14.00), false));
    assert!(
        matches!(r[1], Err(LedgerError::InsufficientFunds { account, available, requested })
            if account == w[0] && available == dec!(6.00) && requested == dec!(7.00)),
        "{:?}",
        r[1]
    );
    assert_eq!((ok(2).from_balance, ok(2).to_balance, ok(2).replayed), (dec!(13.00), dec!(7.00), false));
    assert_eq!((ok(3).from_balance, ok(3).to_balance), (dec!(0.00), dec!(17.00)));
    assert!(ok(4).replayed);
    assert_eq!((ok(4).transfer_id, ok(4).from_balance, ok(4).to_balance), (ok(2).transfer_id, dec!(13.00), dec!(7.00)));
    assert!(
        matches!(&r[5], Err(LedgerError::IdempotencyConflict { key, existing })
            if key == "k" && *existing == KeyHolder::Transfer(ok(2).transfer_id)),
        "{:?}",
        r[5]
    );
    assert!(matches!(r[6], Err(LedgerError::SameAccount { .. })), "{:?}", r[6]);
    assert!(matches!(r[7], Err(LedgerError::AccountNotFound { account }) if account == ghost), "{:?}", r[7]);
    assert!(matches!(r[8], Err(LedgerError::CurrencyMismatch { .. })), "{:?}", r[8]);
    assert!(matches!(&r[9], Err(LedgerError::InvalidAmount { reason, .. }) if reason.contains("2 decimal places")));
    assert!(matches!(r[10], Err(LedgerError::InvalidAmount { .. })), "{:?}", r[10]);
    assert_eq!(ok(11).to_balance, dec!(5.00));
    // Transfer ids follow item order.
    assert!(ok(0).transfer_id < ok(2).transfer_id && ok(2).transfer_id < ok(3).transfer_id);
    assert!(ok(3).transfer_id < ok(11).transfer_id);

    assert_eq!(l.balance(w[0])?, dec!(5.00));
    assert_eq!(l.balance(w[1])?, dec!(13.00));
    assert_eq!(l.balance(w[2])?, dec!(17.00));
    assert_eq!(l.account(w[0])?.version, 1 + 3 + 1);
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{:?}", audit.violations);
    let after = l.stats();
    assert_eq!(after.succeeded - before.succeeded, 5);
    assert_eq!(after.refused - before.refused, 7);

    // The keyed items again, in another batch: committed keys replay the first receipt or
    // conflict, and nothing moves.
    let before = snapshot(&l)?;
    let again = l.transfer_batch(&[items[5].clone(), items[2].clone(), items[4].clone()])?;
    assert_eq!(before, snapshot(&l)?);
    assert!(matches!(&again[0], Err(LedgerError::IdempotencyConflict { existing, .. })
        if *existing == KeyHolder::Transfer(ok(2).transfer_id)));
    for replay in &again[1..] {
        let replay = replay.as_ref().expect("replays");
        assert!(replay.replayed);
        assert_eq!(
            (replay.transfer_id, replay.from_balance, replay.to_balance),
            (ok(2).transfer_id, dec!(13.00), dec!(7.00))
        );
    }
    Ok(())
}

#[test]
fn a_refused_item_does_not_consume_its_key() -> Result<()> {
    let (l, _, _, w) = funded("batch_key_refused", 2, dec!(10.00))?;
    let r = l.transfer_batch(&[
        Transfer::new(w[0], w[1], dec!(50.00)).idempotency_key("retry-me"),
        Transfer::new(w[0], w[1], dec!(5.00)).idempotency_key("retry-me"),
        Transfer::new(w[0], w[1], dec!(5.00)).idempotency_key("retry-me"),
    ])?;
    assert!(matches!(r[0], Err(LedgerError::InsufficientFunds { .. })), "{:?}", r[0]);
    let first = r[1].as_ref().expect("the key is free: applied");
    assert!(!first.replayed);
    let second = r[2].as_ref().expect("replayed");
    assert!(second.replayed && second.transfer_id == first.transfer_id);
    assert_eq!(l.balance(w[0])?, dec!(5.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn an_oversized_batch_is_a_typed_error_and_sends_nothing() -> Result<()> {
    let (l, _, _, w) = funded("batch_too_large", 2, dec!(10.00))?;
    let items = vec![Transfer::new(w[0], w[1], dec!(0.01)); BATCH_ITEMS_MAX + 1];
    refused!(l, l.transfer_batch(&items), LedgerError::BatchTooLarge { items, max } if items == BATCH_ITEMS_MAX + 1 && max == BATCH_ITEMS_MAX);
    Ok(())
}

/// Sends `items` (over `w` and `issuer`) as one batch on a fresh ledger and one by one on a
/// second one; outcomes, balances and versions must agree. Returns how many were applied.
fn batch_matches_one_by_one(test: &str, items: impl Fn(&[AccountId], AccountId) -> Vec<Transfer>) -> Result<usize> {
    let (l, _, issuer, w) = funded(test, 20, dec!(100.00))?;
    let (l2, _, issuer2, w2) = funded(&format!("{test}_serial"), 20, dec!(100.00))?;
    let batch = items(&w, issuer);
    let alone_items = items(&w2, issuer2);
    let results = l.transfer_batch(&batch)?;
    assert_eq!(results.len(), batch.len());
    for ((t, batched), alone) in batch.iter().zip(&results).zip(&alone_items) {
        let alone = l2.transfer(alone);
        match (batched, &alone) {
            (Ok(b), Ok(a)) => assert_eq!((b.from_balance, b.to_balance), (a.from_balance, a.to_balance), "{t:?}"),
            (
                Err(LedgerError::InsufficientFunds { available: x, .. }),
                Err(LedgerError::InsufficientFunds { available: y, .. }),
            ) => assert_eq!(x, y),
            other => panic!("batched and alone differ for {t:?}: {other:?}"),
        }
    }
    for (a, b) in w.iter().zip(&w2) {
        let (x, y) = (l.account(*a)?, l2.account(*b)?);
        assert_eq!((x.balance, x.version), (y.balance, y.version));
    }
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{:?}", audit.violations);
    // Transfer ids follow item order.
    let ids: Vec<i64> = results.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.transfer_id.0).collect();
    assert!(ids.windows(2).all(|p| p[0] < p[1]));
    Ok(ids.len())
}

/// Items that overdraw now and then: some are refused, so the batch is decided item by item.
#[test]
fn a_thousand_items_with_refusals_match_the_same_transfers_one_by_one() -> Result<()> {
    let applied = batch_matches_one_by_one("batch_thousand", |w, issuer| {
        (0..1_000)
            .map(|i| {
                let (a, b) = (w[(i * 7) % 20], w[(i * 7 + 1 + i % 19) % 20]);
                if i % 50 == 0 {
                    Transfer::new(issuer, a, dec!(3.00))
                } else {
                    Transfer::new(a, b, Decimal::new((i % 900 + 1) as i64 * 5, 2))
                }
            })
            .collect()
    })?;
    assert!((500..1_000).contains(&applied), "{applied} applied: the refusals did not happen");
    Ok(())
}

/// Items that all go through (each passes the item loop's one test, migration 14) must agree
/// with the same transfers one by one, chains and versions included.
#[test]
fn a_thousand_accepted_items_match_the_same_transfers_one_by_one() -> Result<()> {
    let applied = batch_matches_one_by_one("batch_thousand_ok", |w, issuer| {
        (0..1_000)
            .map(|i| {
                let (a, b) = (w[(i * 3) % 20], w[(i * 3 + 1 + i % 19) % 20]);
                let t = if i % 10 == 0 {
                    Transfer::new(issuer, a, dec!(0.50))
                } else {
                    Transfer::new(a, b, Decimal::new((i % 7 + 1) as i64, 2))
                };
                t.memo(format!("m{i}")).idempotency_key(format!("ok-{i}"))
            })
            .collect()
    })?;
    assert_eq!(applied, 1_000);
    Ok(())
}

/// Every outcome a batch item can have, and the accepts next to each bound, in one batch:
/// the same as the same transfers one by one on a twin ledger (outcome, amounts, balances,
/// the refusal's kind and figures), and every account ends the same. Migration 14 judges an
/// item by one test first and falls back to the checks one by one; this holds the two to the
/// same answers as `transfer()`, which has only the checks.
#[test]
fn every_outcome_in_one_batch_matches_the_same_transfers_one_by_one() -> Result<()> {
    struct Setup {
        l: Ledger,
        w: Vec<AccountId>,
        frozen: AccountId,
        closed: AccountId,
        capped: AccountId,
        credit: AccountId,
        eur: AccountId,
    }
    let setup = |test: &str| -> Result<Setup> {
        let (l, _, issuer, w) = funded(test, 8, dec!(100.00))?;
        l.define_currency("EUR", 2)?;
        let eur = l.open_account(&NewAccount::new("EUR"))?.id;
        let frozen = l.open_account(&NewAccount::new("USD"))?.id;
        l.transfer(&Transfer::new(issuer, frozen, dec!(50.00)))?;
        l.freeze(frozen)?;
        let closed = l.open_account(&NewAccount::new("USD"))?.id;
        l.close(closed)?;
        let capped = l.open_account(&NewAccount::new("USD").max_balance(dec!(150.00)))?.id;
        l.transfer(&Transfer::new(issuer, capped, dec!(100.00)))?;
        let credit = l.open_account(&NewAccount::new("USD").min_balance(dec!(-50.00)))?.id;
        l.transfer(&Transfer::new(issuer, credit, dec!(100.00)))?;
        Ok(Setup { l, w, frozen, closed, capped, credit, eur })
    };
    let items = |s: &Setup| -> Vec<Transfer> {
        let w = &s.w;
        vec![
            Transfer::new(w[0], w[1], dec!(10.00)),                        // ok
            Transfer::new(s.frozen, w[1], dec!(1.00)),                     // from frozen
            Transfer::new(w[1], s.frozen, dec!(1.00)),                     // into frozen: ok
            Transfer::new(w[1], s.closed, dec!(1.00)),                     // into closed
            Transfer::new(s.closed, w[1], dec!(1.00)),                     // from closed
            Transfer::new(w[2], s.capped, dec!(60.00)),                    // over the ceiling
            Transfer::new(w[2], s.capped, dec!(50.00)),                    // to the ceiling: ok
            Transfer::new(w[2], s.capped, dec!(0.01)),                     // over it by a cent
            Transfer::new(s.credit, w[3], dec!(150.00)),                   // to the floor: ok
            Transfer::new(s.credit, w[3], dec!(0.01)),                     // below it by a cent
            Transfer::new(w[4], w[5], dec!(500.00)).up_to_available(),     // a sweep: 100.00
            Transfer::new(w[4], w[5], dec!(1.00)).up_to_available(),       // nothing left
            Transfer::new(w[5], w[4], dec!(1.00)).up_to_available(),       // enough: ok as asked
            Transfer::new(w[6], s.eur, dec!(1.00)),                        // other currency
            Transfer::new(w[6], w[7], dec!(0.001)),                        // finer than cents
            Transfer::new(w[6], AccountId(987_654), dec!(1.00)),           // no such account
            Transfer::new(w[6], w[7], dec!(5.00)).idempotency_key("k"),    // ok
            Transfer::new(w[6], w[7], dec!(5.00)).idempotency_key("k"),    // replays it
            Transfer::new(w[6], w[7], dec!(6.00)).idempotency_key("k"),    // conflicts
            Transfer::new(w[7], w[6], dec!(1000.00)).idempotency_key("r"), // refused, key free
            Transfer::new(w[7], w[6], dec!(1.00)).idempotency_key("r"),    // so this one is ok
        ]
    };
    let (batched, alone) = (setup("batch_every_outcome")?, setup("batch_every_outcome_serial")?);
    let results = batched.l.transfer_batch(&items(&batched))?;
    let one_by_one: Vec<_> = items(&alone).iter().map(|t| alone.l.transfer(t)).collect();
    let shown = |r: &Result<wallet_ledger::Receipt, LedgerError>| match r {
        Ok(r) => format!("ok {} {} {} replayed={}", r.amount, r.from_balance, r.to_balance, r.replayed),
        Err(LedgerError::InsufficientFunds { account, available, requested }) => {
            format!("insufficient_funds {account:?} {available} {requested}")
        }
        Err(LedgerError::BalanceLimitExceeded { account, max_balance, requested }) => {
            format!("balance_limit_exceeded {account:?} {max_balance} {requested}")
        }
        Err(LedgerError::AccountNotFound { account }) => format!("account_not_found {account:?}"),
        Err(LedgerError::AccountFrozen { account }) => format!("account_frozen {account:?}"),
        Err(LedgerError::AccountClosed { account }) => format!("account_closed {account:?}"),
        Err(e) => e.kind().to_string(),
    };
    let (a, b): (Vec<String>, Vec<String>) =
        (results.iter().map(shown).collect(), one_by_one.iter().map(shown).collect());
    assert_eq!(a, b);
    // And each item had the outcome its comment above says (so every path was taken).
    let expected = [
        "ok 10.00 ",
        "account_frozen",
        "ok 1.00 ",
        "account_closed",
        "account_closed",
        "balance_limit_exceeded",
        "ok 50.00 ",
        "balance_limit_exceeded",
        "ok 150.00 ",
        "insufficient_funds",
        "ok 100.00 ",
        "insufficient_funds",
        "ok 1.00 ",
        "currency_mismatch",
        "invalid_amount",
        "account_not_found",
        "ok 5.00 ",
        "ok 5.00 ",
        "idempotency_conflict",
        "insufficient_funds",
        "ok 1.00 ",
    ];
    assert_eq!(a.len(), expected.len());
    for (i, (got, want)) in a.iter().zip(expected).enumerate() {
        assert!(got.starts_with(want), "item {i}: {got}, expected {want}");
    }
    assert!(a[16].ends_with("replayed=false") && a[17].ends_with("replayed=true"), "{:?}", &a[16..18]);
    let all = |s: &Setup| {
        let mut v = s.w.clone();
        v.extend([s.frozen, s.closed, s.capped, s.credit, s.eur]);
        v
    };
    for (x, y) in all(&batched).into_iter().zip(all(&alone)) {
        let (x, y) = (batched.l.account(x)?, alone.l.account(y)?);
        assert_eq!((x.balance, x.version, x.status), (y.balance, y.version, y.status));
    }
    assert!(batched.l.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_balance_too_large_refuses_only_its_item() -> Result<()> {
    let (l, _, issuer, w) = funded("batch_overflow", 2, dec!(10.00))?;
    let huge = Decimal::from_i128_with_scale(6_000_000_000_000_000_000_000_000_000, 2);
    let r = l.transfer_batch(&[
        Transfer::new(issuer, w[0], huge),
        Transfer::new(issuer, w[0], huge),
        Transfer::new(w[1], w[0], dec!(1.00)),
    ])?;
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert!(matches!(r[1], Err(LedgerError::InvalidAmount { .. })), "{:?}", r[1]);
    assert!(r[2].is_ok(), "{:?}", r[2]);
    // The single path says the same for the same request.
    assert!(matches!(l.transfer(&Transfer::new(issuer, w[0], huge)), Err(LedgerError::InvalidAmount { .. })));
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn nowait_refuses_the_whole_batch_when_one_account_is_locked() -> Result<()> {
    let (l, url, _, w) = funded("batch_nowait", 3, dec!(10.00))?;
    let mut holder = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut tx = holder.transaction()?;
    tx.query_one("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE", &[&w[2].0])?;
    let nowait = Ledger::builder(&url).lock_wait(LockWait::NoWait).build()?;
    refused!(
        l,
        nowait.transfer_batch(&[Transfer::new(w[0], w[1], dec!(1)), Transfer::new(w[1], w[2], dec!(1))]),
        LedgerError::LockUnavailable { .. }
    );
    tx.rollback()?;
    assert!(nowait.transfer_batch(&[Transfer::new(w[0], w[1], dec!(1))])?[0].is_ok());
    Ok(())
}

#[test]
fn in_the_callers_transaction_it_commits_and_rolls_back_with_it() -> Result<()> {
    let (l, url, _, w) = funded("batch_in", 2, dec!(10.00))?;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY)")?;
    let before = snapshot(&l)?;
    let mut tx = client.transaction()?;
    tx.execute("INSERT INTO orders VALUES (1)", &[])?;
    let r = l.transfer_batch_in(&mut tx, &[Transfer::new(w[0], w[1], dec!(2)), Transfer::new(w[0], w[1], dec!(20))])?;
    assert!(r[0].is_ok() && matches!(r[1], Err(LedgerError::InsufficientFunds { .. })));
    tx.rollback()?;
    assert_eq!(before, snapshot(&l)?);

    let mut tx = client.transaction()?;
    tx.execute("INSERT INTO orders VALUES (2)", &[])?;
    let r = l.transfer_batch_in(
        &mut tx,
        &[
            Transfer::new(w[0], w[1], dec!(2)).idempotency_key("o2"),
            Transfer::new(w[0], w[1], dec!(2)).idempotency_key("o2"),
        ],
    )?;
    assert!(!r[0].as_ref().unwrap().replayed && r[1].as_ref().unwrap().replayed);
    tx.commit()?;
    assert_eq!(l.balance(w[0])?, dec!(8.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

/// Batches in opposite directions over the same accounts, from 8 threads: the union lock in
/// ascending order never deadlocks (the server's own counter), and no money moves wrongly.
#[test]
fn concurrent_batches_in_opposite_directions_never_deadlock() -> Result<()> {
    let (l, url, issuer, w) = funded("batch_concurrent", 6, dec!(1000.00))?;
    let before = deadlocks(&url)?;
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (l, w, barrier) = (l.clone(), w.clone(), barrier.clone());
            thread::spawn(move || -> Result<usize> {
                barrier.wait();
                let mut applied = 0;
                for round in 0..25 {
                    let items: Vec<Transfer> = (0..12)
                        .map(|i| {
                            let (a, b) = (w[(t + i) % 6], w[(t + i + 1 + round % 4) % 6]);
                            let (a, b) = if (t + i) % 2 == 0 { (a, b) } else { (b, a) };
                            Transfer::new(a, b, Decimal::new(((t * 31 + i * 7 + round) % 500 + 1) as i64, 2))
                        })
                        .collect();
                    applied += l.transfer_batch(&items)?.iter().filter(|r| r.is_ok()).count();
                }
                Ok(applied)
            })
        })
        .collect();
    let mut applied = 0;
    for h in handles {
        applied += h.join().expect("worker panicked")?;
    }
    assert!(applied > 1_000, "only {applied} applied");
    let total: Decimal = w.iter().map(|a| l.balance(*a).unwrap()).sum();
    assert_eq!(total, dec!(6000.00));
    assert_eq!(l.balance(issuer)?, dec!(-6000.00));
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{:?}", audit.violations);
    drop(l);
    assert_eq!(deadlocks(&url)?, before, "the server counted deadlocks");
    Ok(())
}

/// A connection killed under the pool is retried, and the retry applies each item once.
#[test]
fn a_lost_connection_is_retried_without_applying_twice() -> Result<()> {
    let (l, url, _, w) = funded("batch_reconnect", 2, dec!(10.00))?;
    let single = Ledger::builder(&url).pool_size(1).build()?;
    single.transfer_batch(&[Transfer::new(w[0], w[1], dec!(1))])?;
    let mut admin = postgres::Client::connect(&url, postgres::NoTls)?;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )?
        .get(0);
    assert!(killed >= 1);
    thread::sleep(std::time::Duration::from_millis(100));
    let retries_before = single.stats().retries;
    let r = single.transfer_batch(&[Transfer::new(w[0], w[1], dec!(1)), Transfer::new(w[0], w[1], dec!(2))])?;
    assert_eq!(r[1].as_ref().expect("applied").from_balance, dec!(6.00));
    assert!(single.stats().retries > retries_before, "the killed connection was not retried");
    assert_eq!(l.balance(w[1])?, dec!(14.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

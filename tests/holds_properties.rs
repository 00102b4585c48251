//! Property: transfers, holds, captures, voids and expiry workers racing on the same accounts
//! and holds, on real threads, keep every invariant: money conserved, available balances at or
//! above their floors, every hold ended at most once (and exactly once per successful ending
//! call), never more captured than held, no deadlock, no unexpected error.
//!
//! `PROPTEST_CASES` raises the default of 6 cases.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{AccountId, Hold, HoldId, Ledger, LedgerError};

#[derive(Debug, Clone)]
enum Op {
    Transfer { from: usize, to: usize, cents: i64 },
    Hold { from: usize, to: usize, cents: i64, lapsing: bool },
    Capture { pick: usize, percent: Option<u8> },
    Void { pick: usize },
    Expire { limit: u32 },
}

fn op(accounts: usize) -> impl Strategy<Value = Op> {
    let a = 0..accounts;
    prop_oneof![
        3 => (a.clone(), a.clone(), 1..4_000i64).prop_map(|(from, to, cents)| Op::Transfer { from, to, cents }),
        3 => (a.clone(), a, 1..4_000i64, any::<bool>()).prop_map(|(from, to, cents, lapsing)| Op::Hold { from, to, cents, lapsing }),
        2 => (any::<usize>(), proptest::option::of(1..=100u8)).prop_map(|(pick, percent)| Op::Capture { pick, percent }),
        1 => any::<usize>().prop_map(|pick| Op::Void { pick }),
        1 => (1..20u32).prop_map(|limit| Op::Expire { limit }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    funds: Vec<i64>,
    threads: Vec<Vec<Op>>,
}

fn case() -> impl Strategy<Value = Case> {
    (3..8usize).prop_flat_map(|n| {
        (
            proptest::collection::vec(0..20_000i64, n),
            proptest::collection::vec(proptest::collection::vec(op(n), 5..30), 2..=8),
        )
            .prop_map(|(funds, threads)| Case { funds, threads })
    })
}

#[derive(Default)]
struct Tally {
    attempts: usize,
    ok: usize,
    refused: usize,
    ended_by_calls: usize,
    expired_by_workers: usize,
    captures: Vec<(HoldId, Decimal)>,
}

/// Runs one thread's ops; every outcome must be a success or a typed refusal.
fn run_ops(
    l: &Ledger,
    accounts: &[AccountId],
    holds: &Mutex<Vec<(HoldId, Decimal)>>,
    ops: &[Op],
) -> Result<Tally, String> {
    let mut t = Tally::default();
    for op in ops {
        t.attempts += 1;
        let pick = |i: usize| {
            let holds = holds.lock().expect("holds lock");
            holds.get(i % holds.len().max(1)).copied()
        };
        let result: Result<(), LedgerError> = match op {
            Op::Transfer { from, to, cents } => l
                .transfer(&wallet_ledger::Transfer::new(accounts[*from], accounts[*to], Decimal::new(*cents, 2)))
                .map(|_| ()),
            Op::Hold { from, to, cents, lapsing } => {
                let ttl = if *lapsing { Duration::from_millis(5) } else { Duration::from_secs(3600) };
                let amount = Decimal::new(*cents, 2);
                l.hold(&Hold::new(accounts[*from], accounts[*to], amount).expires_in(ttl))
                    .map(|r| holds.lock().expect("holds lock").push((r.hold_id, amount)))
            }
            Op::Capture { pick: p, percent } => match pick(*p) {
                None => Ok(()),
                Some((id, held)) => {
                    let amount =
                        percent.map(|pc| (held * Decimal::from(pc) / dec!(100)).round_dp(2)).filter(|a| *a > dec!(0));
                    l.capture(id, amount).map(|r| {
                        t.ended_by_calls += 1;
                        t.captures.push((id, r.amount));
                    })
                }
            },
            Op::Void { pick: p } => match pick(*p) {
                None => Ok(()),
                Some((id, _)) => l.void(id).map(|()| t.ended_by_calls += 1),
            },
            Op::Expire { limit } => l.expire_holds(*limit).map(|n| t.expired_by_workers += n),
        };
        match result {
            Ok(()) => t.ok += 1,
            Err(
                LedgerError::InsufficientFunds { .. }
                | LedgerError::SameAccount { .. }
                | LedgerError::HoldNotPending { .. },
            ) => t.refused += 1,
            Err(e) => return Err(format!("unexpected error on {op:?}: {e:?}")),
        }
    }
    Ok(t)
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let (l, url) = common::ledger("holds_prop").map_err(|e| TestCaseError::fail(e.to_string()))?;
    let setup = || -> anyhow::Result<Vec<AccountId>> {
        l.define_currency("USD", 2)?;
        let issuer = l.open_account(&wallet_ledger::NewAccount::new("USD").unbounded())?.id;
        let mut accounts = Vec::new();
        for cents in &case.funds {
            let id = l.open_account(&wallet_ledger::NewAccount::new("USD"))?.id;
            if *cents > 0 {
                l.transfer(&wallet_ledger::Transfer::new(issuer, id, Decimal::new(*cents, 2)))?;
            }
            accounts.push(id);
        }
        Ok(accounts)
    };
    let accounts = Arc::new(setup().map_err(|e| TestCaseError::fail(e.to_string()))?);
    let before = common::deadlocks(&url).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let holds = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(case.threads.len()));
    let handles: Vec<_> = case
        .threads
        .iter()
        .cloned()
        .map(|ops| {
            let (l, accounts, holds, barrier) = (l.clone(), accounts.clone(), holds.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                run_ops(&l, &accounts, &holds, &ops)
            })
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        let t = h.join().expect("worker panicked").map_err(TestCaseError::fail)?;
        total.attempts += t.attempts;
        total.ok += t.ok;
        total.refused += t.refused;
        total.ended_by_calls += t.ended_by_calls;
        total.expired_by_workers += t.expired_by_workers;
        total.captures.extend(t.captures);
    }
    prop_assert_eq!(total.ok + total.refused, total.attempts);

    let audit = l.verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(audit.is_clean(), "audit: {:?}", audit.violations);
    let mut conn = l.connection().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let rows = conn
        .client()
        .query(
            "SELECT h.id, h.amount, h.captured, count(e.id) FILTER (WHERE e.event <> 'created')
               FROM wallet_ledger.holds h LEFT JOIN wallet_ledger.hold_events e ON e.hold_id = h.id
              GROUP BY h.id",
            &[],
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut endings = 0;
    let captured: HashMap<i64, Decimal> = total.captures.iter().map(|(id, a)| (id.0, *a)).collect();
    prop_assert_eq!(captured.len(), total.captures.len(), "a hold was captured twice");
    for r in &rows {
        let (id, amount, db_captured, ended): (i64, Decimal, Option<Decimal>, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        prop_assert!(ended <= 1, "hold {} ended {} times", id, ended);
        endings += ended as usize;
        if let Some(c) = db_captured {
            prop_assert!(c <= amount, "hold {} captured {} of {}", id, c, amount);
            prop_assert_eq!(captured.get(&id), Some(&c), "capture receipt differs from the stored capture");
        }
    }
    prop_assert_eq!(endings, total.ended_by_calls + total.expired_by_workers);
    drop(conn);
    drop(l);
    let after = common::deadlocks(&url).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(after, before, "the server counted deadlocks");
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn holds_transfers_and_expiry_keep_every_invariant(case in case()) {
        check(&case)?;
    }
}

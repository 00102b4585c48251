//! The proof properties on a Citus cluster (a coordinator and two workers): generated ledgers
//! and concurrent workloads from the test kit, run on real threads over real pooled connections
//! to the coordinator, with the accounts hashed over both workers, judged by the kit's checker:
//! conservation and floors (the audit is clean), accounting of every attempt, no deadlock and no
//! unexpected error, serial equivalence, idempotency. The ledger runs with no retries here, so a
//! deadlock (local or Citus's distributed one) would surface as a finding instead of being
//! retried away. The request-order control must be caught deadlocking on the same cluster.
//!
//! Each case gets its own schema (distributed tables of its own). Skipped, with a printed line,
//! on a machine without Citus. `PROPTEST_CASES` raises the number of cases.
#![cfg(feature = "testkit")]

mod citus_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use citus_common::{citus_url, workers_of, Schema};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestError, TestRunner};
use wallet_ledger::testkit::{case, check, config, run, Case, Control, Property, Report, Setup, Shape};

/// What one case showed beside its report: how many workers its accounts were on, and how many
/// of its committed transfers crossed workers.
struct Spread {
    workers: usize,
    cross_worker: usize,
}

/// Builds `case` in a fresh schema of the Citus database, runs it with `control`, checks it.
fn check_on_citus(url: &str, case: &Case, control: Control, prefix: &str) -> anyhow::Result<(Report, Spread)> {
    let schema = Schema::new(url, prefix);
    let threads = case.workload.threads.len() as u32;
    let ledger = schema.builder(threads + 2).max_retries(0).build()?;
    let setup = Setup::create(&ledger, &case.spec)?;
    let log = run(&ledger, &setup, &case.workload, control);
    let report = check(&ledger, &setup, &log)?;
    let ids: Vec<_> = setup.accounts.iter().chain(&setup.issuers).copied().collect();
    let placement = workers_of(&schema, &ids)?;
    let workers = placement.values().collect::<BTreeSet<_>>().len();
    let cross_worker = log
        .outcomes
        .iter()
        .filter(|o| matches!(&o.result, Ok(r) if !r.replayed))
        .filter(|o| placement.get(&o.transfer.from) != placement.get(&o.transfer.to))
        .count();
    drop(ledger);
    Ok((report, Spread { workers, cross_worker }))
}

fn property(url: &str, test: &'static str, default_cases: u32, shape: Shape) -> Vec<(Report, Spread)> {
    let results = std::sync::Mutex::new(Vec::new());
    let mut runner = TestRunner::new(config(default_cases));
    let outcome = runner.run(&case(shape), |case| {
        let (report, spread) = check_on_citus(url, &case, Control::Ledger, test)
            .map_err(|e| TestCaseError::fail(format!("case could not run: {e:?}")))?;
        prop_assert!(report.is_clean(), "{report}");
        let s = &report.stats;
        prop_assert_eq!(s.applied + s.replayed + s.refused, s.attempts, "{}", report);
        prop_assert_eq!(s.applied, s.committed, "{}", report);
        results.lock().expect("not poisoned").push((report, spread));
        Ok(())
    });
    match outcome {
        Ok(()) => results.into_inner().expect("not poisoned"),
        Err(TestError::Fail(reason, minimal)) => {
            panic!("{test} failed: {reason}\nminimal failing case:\n{:#?}\n{:#?}", minimal.spec, minimal.workload)
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

#[test]
fn ledger_keeps_every_property_on_citus() {
    let Some(url) = citus_url("ledger_keeps_every_property_on_citus") else { return };
    let results = property(&url, "props", 8, Shape::mixed());
    let mut covered: BTreeMap<&str, usize> = BTreeMap::new();
    for (r, _) in &results {
        for (kind, n) in &r.stats.refused_by {
            *covered.entry(kind).or_default() += n;
        }
        *covered.entry("replayed").or_default() += r.stats.replayed;
        *covered.entry("applied").or_default() += r.stats.applied;
    }
    let cross: usize = results.iter().map(|(_, s)| s.cross_worker).sum();
    let spread = results.iter().filter(|(_, s)| s.workers == 2).count();
    eprintln!(
        "{} cases: {covered:?}; {cross} committed transfers crossed workers; {spread} cases on both workers",
        results.len()
    );
    assert!(spread > 0, "no case had accounts on both workers");
    assert!(cross > 0, "no committed transfer crossed workers");
    let kinds: &[&str] = if results.len() >= 8 {
        &["applied", "replayed", "InsufficientFunds", "SameAccount", "AccountNotFound", "IdempotencyConflict"]
    } else {
        &["applied"]
    };
    for kind in kinds {
        assert!(covered.get(kind).copied().unwrap_or(0) > 0, "no {kind} in {} cases: {covered:?}", results.len());
    }
}

#[test]
fn ledger_keeps_every_property_on_a_hot_spot_on_citus() {
    let Some(url) = citus_url("ledger_keeps_every_property_on_a_hot_spot_on_citus") else { return };
    let results = property(&url, "props_hot", 2, Shape::hot());
    let cross: usize = results.iter().map(|(_, s)| s.cross_worker).sum();
    let applied: usize = results.iter().map(|(r, _)| r.stats.applied).sum();
    eprintln!("hot: {applied} applied, {cross} across workers");
    assert!(applied > 200, "too little work to prove anything");
}

/// The control on the same cluster: locking each row in request order is caught deadlocking
/// (Citus's distributed deadlock detector, or a worker's own), and the very same case keeps
/// every property with the ledger's ordered locks.
#[test]
fn locking_in_request_order_is_caught_deadlocking_on_citus() {
    let Some(url) = citus_url("locking_in_request_order_is_caught_deadlocking_on_citus") else { return };
    let mut runner = TestRunner::deterministic();
    let strategy = case(Shape::hot().ops_per_thread(4..=8));
    let started = Instant::now();
    let mut missed = Vec::new();
    while missed.len() < 6 && started.elapsed() < Duration::from_secs(120) {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let (report, _) = check_on_citus(&url, &case, Control::RequestOrder, "request_order").expect("the case runs");
        if report.caught(Property::Deadlock) {
            assert!(report.stats.deadlocks > 0, "{report}");
            assert!(!report.caught(Property::Conservation), "{report}");
            let (ledger, _) = check_on_citus(&url, &case, Control::Ledger, "request_order_ledger").expect("runs");
            assert!(ledger.is_clean(), "{ledger}");
            return;
        }
        missed.push(report.to_string());
    }
    panic!("request order was not caught deadlocking on Citus in {} rounds:\n{}", missed.len(), missed.join("\n"));
}

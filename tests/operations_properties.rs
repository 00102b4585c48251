//! Issue 16's operations in the threaded properties (`testkit::operations`): reversals (partial,
//! whole, several threads reversing one payment), freezes, unfreezes, closes, floor and ceiling
//! changes and sweeps, raced with transfers on real threads, keep every property on the ledger,
//! serial equivalence included; and each broken control (`OpControl::BROKEN`) is caught by the
//! same checker for the rule it breaks, in a hunt from a fixed seed, where the ledger is clean on
//! the very same case.
#![cfg(feature = "testkit")]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use wallet_ledger::testkit::config;
use wallet_ledger::testkit::operations::{
    check_operation_case, operation_case, OpControl, OperationCase, OperationReport, OperationShape, Rule,
};

fn clean(case: &OperationCase, prefix: &str) -> Result<OperationReport, TestCaseError> {
    let report =
        check_operation_case(case, OpControl::Ledger, prefix).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.is_clean(), "{report}\n{case:?}");
    Ok(report)
}

#[test]
fn mixed_operations_keep_every_property() {
    let mut runner = TestRunner::new(config(6));
    runner.run(&operation_case(OperationShape::mixed()), |case| clean(&case, "ops_mixed").map(|_| ())).unwrap();
}

/// Hot cases: every kind of operation goes through and is refused somewhere over the cases.
/// Every case must keep every property; coverage is judged over batches of three random cases,
/// more batches (at most `COVER_BATCHES`) only while some kind or refusal has not occurred yet:
/// a kind of refusal can be missing from three random cases by chance alone.
#[test]
fn hot_operations_keep_every_property_and_cover_every_operation() {
    const KINDS: [&str; 8] = ["transfer", "sweep", "pay", "reverse", "freeze", "unfreeze", "set-min", "set-max"];
    const REFUSALS: [&str; 3] = ["AccountFrozen", "ReversalExceedsOriginal", "InsufficientFunds"];
    const COVER_BATCHES: usize = 4;
    let totals = std::sync::Mutex::new(std::collections::BTreeMap::<&'static str, [usize; 3]>::new());
    let refusals = std::sync::Mutex::new(std::collections::BTreeMap::<&'static str, usize>::new());
    let covered = |totals: &std::collections::BTreeMap<&'static str, [usize; 3]>,
                   refusals: &std::collections::BTreeMap<&'static str, usize>| {
        KINDS.iter().all(|k| totals.get(k).is_some_and(|c| c[0] > 0))
            && REFUSALS.iter().all(|r| refusals.get(r).is_some_and(|n| *n > 0))
    };
    for _ in 0..COVER_BATCHES {
        let mut runner = TestRunner::new(config(3));
        runner
            .run(&operation_case(OperationShape::hot()), |case| {
                let report = clean(&case, "ops_hot")?;
                eprintln!("{report}\n  {:?}\n  {:?}", report.by_kind, report.stats.refused_by);
                for (kind, counts) in &report.by_kind {
                    let mut t = totals.lock().unwrap();
                    let e = t.entry(kind).or_default();
                    for i in 0..3 {
                        e[i] += counts[i];
                    }
                }
                for (name, n) in &report.stats.refused_by {
                    *refusals.lock().unwrap().entry(name).or_default() += n;
                }
                Ok(())
            })
            .unwrap();
        if covered(&totals.lock().unwrap(), &refusals.lock().unwrap()) {
            break;
        }
    }
    let totals = totals.into_inner().unwrap();
    let refusals = refusals.into_inner().unwrap();
    eprintln!("over the hot cases: {totals:?}\n{refusals:?}");
    for kind in KINDS {
        assert!(totals.get(kind).is_some_and(|c| c[0] > 0), "no {kind} went through: {totals:?}");
    }
    for name in REFUSALS {
        assert!(refusals.get(name).is_some_and(|n| *n > 0), "no {name}: {refusals:?}");
    }
}

const ROUNDS: usize = 12;
const BOUND: Duration = Duration::from_secs(60);

/// Hot cases from a fixed seed until the checker names `control`'s rule; the ledger must be clean
/// on the catching case.
fn hunt(control: OpControl, prefix: &str) -> OperationReport {
    let rule = control.breaks().expect("a broken control");
    let mut runner = TestRunner::deterministic();
    let strategy = operation_case(OperationShape::hot());
    let started = Instant::now();
    let mut missed = Vec::new();
    while missed.len() < ROUNDS && started.elapsed() < BOUND {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let report = check_operation_case(&case, control, prefix).expect("the case runs");
        if report.caught_rule(rule) {
            eprintln!(
                "{} caught in round {} after {:?}:\n{report}",
                control.name(),
                missed.len() + 1,
                started.elapsed()
            );
            let ledger = check_operation_case(&case, OpControl::Ledger, prefix).expect("the case runs");
            assert!(ledger.is_clean(), "the ledger on the catching case: {ledger}");
            return report;
        }
        missed.push(report.to_string());
    }
    panic!("{} not caught breaking {rule:?} in {} rounds:\n{}", control.name(), missed.len(), missed.join("\n"));
}

#[test]
fn a_reversal_without_the_originals_lock_is_caught() {
    hunt(OpControl::ReversalUnlocked, "ops_reversal");
}

#[test]
fn a_freeze_checked_before_the_lock_is_caught() {
    hunt(OpControl::FreezeCheckedBeforeLock, "ops_freeze");
}

#[test]
fn a_ceiling_checked_before_the_lock_is_caught() {
    hunt(OpControl::CeilingCheckedBeforeLock, "ops_ceiling");
}

#[test]
fn a_sweep_that_reads_before_the_lock_is_caught() {
    hunt(OpControl::SweepReadBeforeLock, "ops_sweep");
}

#[test]
fn state_changes_of_an_account_come_from_one_thread() {
    let mut runner = TestRunner::deterministic();
    for _ in 0..50 {
        let case = operation_case(OperationShape::hot()).new_tree(&mut runner).unwrap().current();
        let threads = case.threads.len();
        for (t, actions) in case.threads.iter().enumerate() {
            assert!(matches!(actions[0], wallet_ledger::testkit::operations::Action::Pay(_)));
            for a in actions.iter().filter_map(|a| a.changed_account()) {
                assert_eq!(a % threads, t, "{case:?}");
            }
        }
        let _ = Rule::Frozen;
    }
}

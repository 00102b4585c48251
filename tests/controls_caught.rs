//! The properties must be able to fail: run against the deliberately broken controls, the
//! checker catches each one for what it breaks. The naive read-modify-write and the
//! transaction without `FOR UPDATE` are caught creating or destroying money; locking in request
//! order is caught deadlocking. The correct multi-statement path passes the same runs.
//!
//! Detection is made reliable rather than lucky: hot workloads (2 to 4 accounts, 8 to 16
//! threads, hundreds of transfers racing on the same rows), cases drawn from a fixed seed, and
//! several rounds allowed within a time bound. Each control is in practice caught in its first
//! round; the bound only absorbs a scheduler that happens to serialise one.
#![cfg(feature = "testkit")]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestError, TestRunner};
use wallet_ledger::testkit::{case, check_case, Case, Control, Property, Report, Shape};

/// Most hot cases a control may need before it is caught.
const ROUNDS: usize = 6;
/// And most time.
const BOUND: Duration = Duration::from_secs(90);

/// Runs hot cases of `shape` with `control` (fixed seed) until the checker reports `property`.
/// Returns the catching report and case, and every report before it.
fn hunt(control: Control, shape: Shape, property: Property, prefix: &str) -> (Report, Case, Vec<Report>) {
    let mut runner = TestRunner::deterministic();
    let strategy = case(shape);
    let started = Instant::now();
    let mut missed = Vec::new();
    while missed.len() < ROUNDS && started.elapsed() < BOUND {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let report = check_case(&case, control, prefix).expect("the case runs");
        if report.caught(property) {
            eprintln!(
                "{} caught in round {} after {:?}:\n{report}",
                control.name(),
                missed.len() + 1,
                started.elapsed()
            );
            return (report, case, missed);
        }
        missed.push(report);
    }
    let missed: Vec<String> = missed.iter().map(ToString::to_string).collect();
    panic!("{} not caught breaking {property:?} in {} rounds:\n{}", control.name(), missed.len(), missed.join("\n"));
}

#[test]
fn naive_read_modify_write_is_caught_creating_or_destroying_money() {
    let (report, _, _) = hunt(Control::Naive, Shape::hot_forward(), Property::Conservation, "naive");
    // The lost update shows everywhere it can: totals, the records' own chains, the replay.
    assert!(report.caught(Property::SerialEquivalence), "{report}");
    assert!(report.caught(Property::Integrity), "{report}");
    assert!(report.audit.violations.iter().any(|v| matches!(v, wallet_ledger::Violation::Conservation { .. })));
}

#[test]
fn transaction_without_for_update_is_caught_creating_or_destroying_money() {
    let (report, _, _) = hunt(Control::Unlocked, Shape::hot_forward(), Property::Conservation, "unlocked");
    assert!(report.caught(Property::SerialEquivalence), "{report}");
    assert!(report.audit.violations.iter().any(|v| matches!(v, wallet_ledger::Violation::Conservation { .. })));
}

#[test]
fn locking_in_request_order_is_caught_deadlocking() {
    // Short threads: every deadlock costs the server's deadlock_timeout before it is broken.
    let shape = Shape::hot().ops_per_thread(4..=8);
    let (report, case, _) = hunt(Control::RequestOrder, shape, Property::Deadlock, "request_order");
    assert!(report.stats.deadlocks > 0, "{report}");
    // It locks correctly otherwise: the money is right, only the order is wrong.
    assert!(!report.caught(Property::Conservation), "{report}");
    // The very same case, with the ledger's ordered locks, keeps every property.
    let ledger = check_case(&case, Control::Ledger, "request_order_ledger").expect("the case runs");
    assert!(ledger.is_clean(), "{ledger}");
}

/// The correct multi-statement path passes the runs that catch the broken controls.
#[test]
fn multi_statement_passes_the_same_hot_runs() {
    for shape in [Shape::hot_forward(), Shape::hot().ops_per_thread(4..=8)] {
        let mut runner = TestRunner::deterministic();
        let case = case(shape).new_tree(&mut runner).expect("a case").current();
        let report = check_case(&case, Control::MultiStatement, "multi_statement_hot").expect("the case runs");
        assert!(report.is_clean(), "{report}");
        assert!(report.stats.applied * 2 > report.stats.attempts, "too little work to prove anything: {report}");
    }
}

/// The ledger's other paths (batches, postings, the combiner) pass the runs that catch the
/// broken controls.
#[test]
fn the_ledgers_other_paths_pass_the_same_hot_runs() {
    for shape in [Shape::hot_forward(), Shape::hot().ops_per_thread(4..=8)] {
        let mut runner = TestRunner::deterministic();
        let case = case(shape).new_tree(&mut runner).expect("a case").current();
        for control in Control::PATHS {
            let report = check_case(&case, control, "paths_hot").expect("the case runs");
            assert!(report.is_clean(), "{report}");
            assert!(report.stats.applied * 2 > report.stats.attempts, "too little work to prove anything: {report}");
        }
    }
}

/// Through proptest, a caught control fails the property and the failure shrinks: the
/// counterexample printed is no larger than the case that first failed, usually much smaller.
#[test]
fn a_caught_control_fails_the_property_and_shrinks() {
    let config = Config {
        cases: ROUNDS as u32,
        max_shrink_iters: 32,
        max_shrink_time: 15_000,
        failure_persistence: None,
        ..Config::default()
    };
    let first_size = std::sync::Mutex::new(None);
    let mut runner =
        TestRunner::new_with_rng(config, proptest::test_runner::TestRng::deterministic_rng(Default::default()));
    // Shorter threads than the hunt's, so that each shrinking step (a full run) is quick.
    let result = runner.run(&case(Shape::hot_forward().ops_per_thread(5..=15)), |case| {
        let report =
            check_case(&case, Control::Naive, "naive_shrink").map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        if !report.is_clean() {
            first_size.lock().expect("not poisoned").get_or_insert(case.workload.attempts());
        }
        prop_assert!(report.is_clean(), "{report}");
        Ok(())
    });
    let Err(TestError::Fail(reason, minimal)) = result else { panic!("the naive control passed: {result:?}") };
    let first = first_size.into_inner().expect("not poisoned").expect("a case failed");
    eprintln!(
        "naive: first failing case {first} attempts, shrunk to {} attempts:\n{:#?}\n{:#?}\n{reason}",
        minimal.workload.attempts(),
        minimal.spec,
        minimal.workload
    );
    assert!(minimal.workload.attempts() <= first);
    assert!(
        reason.to_string().contains("Conservation") || reason.to_string().contains("SerialEquivalence"),
        "{reason}"
    );
}

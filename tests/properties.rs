//! The ledger's properties under real concurrency: generated ledgers and workloads (test kit
//! strategies), run on 2 to 16 real threads over real pooled connections, judged by the test
//! kit's checker: conservation and floors (the audit is clean), accounting of every attempt with
//! no deadlock and no unexpected error, serial equivalence, idempotency.
//!
//! `PROPTEST_CASES=500 cargo test --release --test properties` runs the deep pass
//! (docs/testing.md). Failures shrink to a small counterexample and are persisted in
//! proptest-regressions/properties.txt, replayed first on the next run.
#![cfg(feature = "testkit")]

use std::collections::BTreeMap;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, TestError, TestRng, TestRunner};
use rust_decimal::Decimal;
use wallet_ledger::testkit::{
    case, check, check_case, config, ledger_with, run, server_deadlocks, Case, Control, Floor, Party, Report,
    ScratchDatabase, Setup, Shape,
};

/// The kit's configuration, with failures persisted where proptest's regression files live.
fn persisted(test: &'static str, default_cases: u32) -> Config {
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/properties.txt"))),
        source_file: Some(file!()),
        test_name: Some(test),
        ..config(default_cases)
    }
}

fn checked(case: &Case, control: Control, prefix: &str) -> Result<Report, TestCaseError> {
    check_case(case, control, prefix).map_err(|e| TestCaseError::fail(format!("case could not run: {e:?}")))
}

/// The properties every correct implementation keeps, as one proptest property.
fn keeps_every_property(report: &Report) -> Result<(), TestCaseError> {
    let s = &report.stats;
    prop_assert!(report.is_clean(), "{report}");
    // Accounting, stated on its own: every attempt is a success or a typed refusal.
    prop_assert_eq!(s.applied + s.replayed + s.refused, s.attempts, "{}", report);
    prop_assert_eq!(s.applied, s.committed, "{}", report);
    Ok(())
}

/// Runs `strategy` through a persisted proptest runner and panics with the shrunk
/// counterexample on failure. Returns every report, for coverage checks.
fn property(test: &'static str, default_cases: u32, shape: Shape, control: Control) -> Vec<Report> {
    property_of(test, default_cases, shape, |case| checked(case, control, test))
}

/// [`property`], each case run and checked by `checked`.
fn property_of(
    test: &'static str,
    default_cases: u32,
    shape: Shape,
    checked: impl Fn(&Case) -> Result<Report, TestCaseError>,
) -> Vec<Report> {
    let reports = Mutex::new(Vec::new());
    let mut runner = TestRunner::new(persisted(test, default_cases));
    let result = runner.run(&case(shape), |case| {
        let report = checked(&case)?;
        keeps_every_property(&report)?;
        reports.lock().expect("no test thread panicked holding it").push(report);
        Ok(())
    });
    match result {
        Ok(()) => reports.into_inner().expect("not poisoned"),
        Err(TestError::Fail(reason, minimal)) => {
            panic!("{test} failed: {reason}\nminimal failing case:\n{:#?}\n{:#?}", minimal.spec, minimal.workload)
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

#[test]
fn ledger_keeps_every_property() {
    let reports = property("ledger_keeps_every_property", 32, Shape::mixed(), Control::Ledger);
    // The generated workloads must exercise what the properties are about, or passing means
    // little: replays of repeated keys and every kind of refusal, across the cases run.
    let mut covered: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &reports {
        for (kind, n) in &r.stats.refused_by {
            *covered.entry(kind).or_default() += n;
        }
        *covered.entry("replayed").or_default() += r.stats.replayed;
        *covered.entry("applied").or_default() += r.stats.applied;
    }
    if reports.len() >= 16 {
        for kind in [
            "applied",
            "replayed",
            "InsufficientFunds",
            "SameAccount",
            "AccountNotFound",
            "CurrencyMismatch",
            "IdempotencyConflict",
        ] {
            assert!(covered.get(kind).copied().unwrap_or(0) > 0, "no {kind} in {} cases: {covered:?}", reports.len());
        }
    }
}

#[test]
fn ledger_keeps_every_property_on_a_hot_spot() {
    property("ledger_keeps_every_property_on_a_hot_spot", 3, Shape::hot(), Control::Ledger);
}

/// The correct multi-round-trip path keeps the same properties (idempotency aside: it ignores
/// keys, so repeated keys simply make more transfers).
#[test]
fn multi_statement_keeps_every_property() {
    let reports = property("multi_statement_keeps_every_property", 12, Shape::mixed(), Control::MultiStatement);
    assert!(reports.iter().all(|r| r.skipped == [wallet_ledger::testkit::Property::Idempotency]));
}

/// Which refusal kinds a path's reports covered, summed over its cases.
fn coverage(reports: &[Report]) -> BTreeMap<&'static str, usize> {
    let mut covered: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reports {
        for (kind, n) in &r.stats.refused_by {
            *covered.entry(kind).or_default() += n;
        }
        *covered.entry("replayed").or_default() += r.stats.replayed;
        *covered.entry("applied").or_default() += r.stats.applied;
    }
    covered
}

/// Batches (`transfer_batch` calls of 1 to 5 items per thread, keys repeated inside and across
/// batches) keep every property, idempotency included.
#[test]
fn batches_keep_every_property() {
    property("batches_keep_every_property_on_a_hot_spot", 2, Shape::hot(), Control::Batched);
    let reports = property("batches_keep_every_property", 8, Shape::mixed(), Control::Batched);
    let covered = coverage(&reports);
    if reports.len() >= 8 {
        for kind in ["applied", "replayed", "InsufficientFunds", "IdempotencyConflict"] {
            assert!(covered.get(kind).copied().unwrap_or(0) > 0, "no {kind} in {} cases: {covered:?}", reports.len());
        }
    }
}

/// Every transfer sent as a two-leg posting keeps every property.
#[test]
fn postings_keep_every_property() {
    let reports = property("postings_keep_every_property", 8, Shape::mixed(), Control::Posting);
    assert!(reports.iter().all(|r| r.skipped.is_empty()));
}

/// Transfers through the combiner keep every property, on mixed work and on a hot spot.
#[test]
fn the_combiner_keeps_every_property() {
    let reports = property("the_combiner_keeps_every_property", 8, Shape::mixed(), Control::Combined);
    let covered = coverage(&reports);
    if reports.len() >= 8 {
        for kind in ["applied", "replayed", "InsufficientFunds", "SameAccount"] {
            assert!(covered.get(kind).copied().unwrap_or(0) > 0, "no {kind} in {} cases: {covered:?}", reports.len());
        }
    }
    property("the_combiner_keeps_every_property_on_a_hot_spot", 2, Shape::hot(), Control::Combined);
}

/// A case through the default ledger with its transfers spread over three combining lanes
/// (`LedgerBuilder::combining_lanes`): batches of different lanes meet on shared accounts.
fn checked_in_lanes(case: &Case, test: &str) -> Result<Report, TestCaseError> {
    let attempt = || -> Result<Report, Box<dyn std::error::Error>> {
        let database = ScratchDatabase::new(test)?;
        let threads = u32::try_from(case.workload.threads.len())?;
        let ledger =
            wallet_ledger::Ledger::builder(database.url()).pool_size(threads + 2).combining_lanes(3).build()?;
        let setup = Setup::create(&ledger, &case.spec)?;
        let log = run(&ledger, &setup, &case.workload, Control::Ledger);
        let report = check(&ledger, &setup, &log)?;
        drop(ledger);
        Ok(report)
    };
    attempt().map_err(|e| TestCaseError::fail(format!("case could not run: {e}")))
}

/// The default ledger with three combining lanes keeps every property, on mixed work and on a
/// hot spot.
#[test]
fn combining_lanes_keep_every_property() {
    let test = "combining_lanes_keep_every_property";
    let reports = property_of(test, 6, Shape::mixed(), |case| checked_in_lanes(case, test));
    assert!(coverage(&reports).get("applied").copied().unwrap_or(0) > 0);
    let test = "combining_lanes_keep_every_property_on_a_hot_spot";
    property_of(test, 2, Shape::hot(), |case| checked_in_lanes(case, test));
}

/// The ledger retries a deadlock before reporting it, so the outcomes alone cannot show that
/// none happened: the server's own counter must not move under hot, opposite-direction work.
#[test]
fn ordered_locking_leaves_the_server_deadlock_counter_alone() {
    let database = ScratchDatabase::new("deadlock_counter").expect("database");
    let before = server_deadlocks(database.url()).expect("counter");
    let mut runner = TestRunner::deterministic();
    let strategy = case(Shape::hot());
    let controls = [Control::Ledger, Control::MultiStatement, Control::Batched, Control::Posting, Control::Combined];
    for control in controls.into_iter().chain([Control::Ledger]) {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let ledger = ledger_with(database.url(), case.workload.threads.len(), control).expect("ledger");
        let setup = Setup::create(&ledger, &case.spec).expect("setup");
        let log = run(&ledger, &setup, &case.workload, control);
        let report = check(&ledger, &setup, &log).expect("check");
        assert!(report.is_clean(), "{report}");
        assert!(report.stats.applied > 200, "too little work to prove anything: {report}");
        drop(ledger);
    }
    assert_eq!(server_deadlocks(database.url()).expect("counter"), before, "the server counted deadlocks");
}

/// Generation alone, without a database: every case respects its shape, and the mixed shape
/// produces each unusual attempt the properties need.
#[test]
fn generated_cases_respect_their_shape_and_cover_the_unusual() {
    let mut runner = TestRunner::deterministic();
    let shape = Shape::mixed();
    let strategy = case(shape.clone());
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..200 {
        let Case { spec, workload } = strategy.new_tree(&mut runner).expect("a case").current();
        assert!(shape.accounts.contains(&spec.accounts.len()));
        assert!(shape.threads.contains(&workload.threads.len()));
        for a in &spec.accounts {
            let scale = spec.currencies[a.currency].scale;
            assert!(a.opening >= Decimal::ZERO && a.opening.scale() == scale, "{a:?}");
            match a.floor {
                Floor::Zero => *seen.entry("floor 0").or_default() += 1,
                Floor::Credit(f) => {
                    assert!(f < Decimal::ZERO && f.scale() == scale, "{a:?}");
                    *seen.entry("floor negative").or_default() += 1;
                }
                Floor::Unbounded => *seen.entry("unbounded").or_default() += 1,
            }
        }
        *seen.entry("several currencies").or_default() += usize::from(spec.currencies.len() > 1);
        let mut keys: BTreeMap<&str, Vec<Decimal>> = BTreeMap::new();
        for op in workload.threads.iter().flatten() {
            assert!(op.amount > Decimal::ZERO);
            assert!(!matches!((op.from, op.to), (Party::Unknown, Party::Unknown)));
            let label = match (op.from, op.to) {
                (Party::Unknown, _) | (_, Party::Unknown) => "unknown account",
                (Party::Account(a), Party::Account(b)) if a == b => "same account",
                (Party::Account(a), _) if op.amount > spec.accounts[a].opening => "more than the opening",
                _ => "plain",
            };
            *seen.entry(label).or_default() += 1;
            if let Some(key) = &op.key {
                keys.entry(key).or_default().push(op.amount);
            }
        }
        for amounts in keys.values() {
            if amounts.len() > 1 {
                *seen.entry("repeated key").or_default() += 1;
                if amounts.iter().any(|a| *a != amounts[0]) {
                    *seen.entry("key with other content").or_default() += 1;
                }
            }
        }
    }
    for kind in [
        "floor 0",
        "floor negative",
        "unbounded",
        "several currencies",
        "unknown account",
        "same account",
        "more than the opening",
        "repeated key",
        "key with other content",
    ] {
        assert!(seen.get(kind).copied().unwrap_or(0) > 0, "never generated: {kind}: {seen:?}");
    }
}

/// Shrinking reaches a small counterexample: a property that fails as soon as a workload holds
/// a same-account attempt shrinks to the smallest case there is, 2 accounts and 2 threads of
/// one attempt each.
#[test]
fn counterexamples_shrink_to_the_smallest_case() {
    // A fixed seed: shrinking is a search, and from some random starts proptest's shrinker
    // stops at a local minimum; the point here is that a counterexample does get small.
    let config = Config { failure_persistence: None, max_shrink_iters: 4096, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&case(Shape::mixed()), |case| {
        let same = case.workload.threads.iter().flatten().any(|op| op.from == op.to);
        prop_assert!(!same);
        Ok(())
    });
    let Err(TestError::Fail(_, minimal)) = result else { panic!("same-account attempts are never generated") };
    assert_eq!(minimal.spec.accounts.len(), 2, "{minimal:#?}");
    assert_eq!(minimal.spec.currencies.len(), 1, "{minimal:#?}");
    assert_eq!(minimal.workload.threads.len(), 2, "{minimal:#?}");
    assert_eq!(minimal.workload.attempts(), 2, "{minimal:#?}");
}

//! The test kit in a user's own suite: a proptest property over generated ledgers and
//! concurrent workloads, run against the real ledger, then against a broken control to show
//! that the same property catches it.
//!
//! ```text
//! cargo run --example testkit_property
//! PROPTEST_CASES=50 cargo run --release --example testkit_property
//! ```
//!
//! In a test file the same closure goes in a `#[test]`, or `check_case` inside `proptest!`.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use wallet_ledger::testkit::{case, check, config, ledger_for, run, Control, Property, ScratchDatabase, Setup, Shape};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The property: every generated case, run on its own database with real threads,
    //    leaves a clean report. The steps of `check_case`, spelled out.
    let mut runner = TestRunner::new(config(8));
    runner.run(&case(Shape::mixed()), |case| {
        let database = ScratchDatabase::new("example").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ledger =
            ledger_for(database.url(), case.workload.threads.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let setup = Setup::create(&ledger, &case.spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let log = run(&ledger, &setup, &case.workload, Control::Ledger);
        let report = check(&ledger, &setup, &log).map_err(|e| TestCaseError::fail(e.to_string()))?;
        println!("{report}");
        prop_assert!(report.is_clean(), "{report}");
        Ok(())
    })?;

    // 2. The same check against a read-modify-write transfer with no lock, on a hot spot: it
    //    loses updates, so money is created or destroyed and no serial order explains it.
    let case =
        case(Shape::hot_forward()).new_tree(&mut TestRunner::deterministic()).map_err(|e| e.to_string())?.current();
    let database = ScratchDatabase::new("example_naive")?;
    let ledger = ledger_for(database.url(), case.workload.threads.len())?;
    let setup = Setup::create(&ledger, &case.spec)?;
    let log = run(&ledger, &setup, &case.workload, Control::Naive);
    let report = check(&ledger, &setup, &log)?;
    println!("{report}");
    assert!(report.caught(Property::Conservation) || report.caught(Property::SerialEquivalence));
    Ok(())
}

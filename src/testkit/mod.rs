//! Test kit for property-based, multi-threaded tests of a ledger (feature `testkit`).
//!
//! A property test of a ledger has four parts, and this module has one piece for each:
//!
//! 1. **Generate** a ledger and a concurrent workload: [`case`] (or [`ledger_spec`] and
//!    [`workload`]) are proptest strategies shaped by a [`Shape`]: 2 to 50 accounts with floors
//!    0, negative or unbounded and opening balances in up to three currencies; 2 to 16 threads of
//!    transfers, some overdrawing, some from an account to itself or to an unknown one, some
//!    under repeated idempotency keys. Accounts are indices ([`Party::Account`]), so a case means
//!    the same on every database and prints as a short counterexample.
//! 2. **Build** the ledger: [`Setup::create`] defines the currencies, opens an unbounded issuer
//!    per currency and the accounts (at zero, as every account opens), and funds each opening
//!    balance with a transfer from the issuer.
//! 3. **Run** the workload: [`run`] starts one real thread per workload thread on real pooled
//!    connections, releases them together from a barrier, and records every outcome in a
//!    [`RunLog`].
//! 4. **Check**: [`check`] compares the log with the database and returns a [`Report`] of
//!    [`Finding`]s, each naming the [`Property`] it breaks: conservation and floors (with the
//!    ledger's own audit), accounting of every attempt, no deadlock or unexpected error, serial
//!    equivalence of the committed transfers, idempotency.
//!
//! [`check_case`] does 2 to 4 on a fresh database, and [`config`] gives a proptest
//! configuration that honours `PROPTEST_CASES`. The [`controls`] are deliberately broken
//! transfer implementations ([`Control`]) the checker must catch: run a workload with one of
//! them instead of [`Control::Ledger`] to see that a property can fail.
//!
//! ```
//! use proptest::prelude::*;
//! use wallet_ledger::testkit::{case, check_case, config, Control, Shape};
//!
//! let mut runner = proptest::test_runner::TestRunner::new(config(2));
//! runner
//!     .run(&case(Shape::mixed().threads(2..=4).ops_per_thread(1..=4)), |case| {
//!         let report = check_case(&case, Control::Ledger, "testkit_doc").map_err(|e| TestCaseError::fail(e.to_string()))?;
//!         prop_assert!(report.is_clean(), "{report}");
//!         Ok(())
//!     })
//!     .expect("the ledger keeps every property");
//! ```
//!
//! [`postings`] does the same for multi-leg postings (three and four legs, several debits and
//! credits in one atomic unit), with its own broken control.
//!
//! Nothing here is meant for production code paths.

mod checker;
pub mod controls;
pub mod expiry_controls;
pub mod feed;
mod model;
pub mod operation_controls;
pub mod operations;
pub mod postings;
mod runner;
mod strategy;

pub use checker::{check, Finding, Property, Report, Stats};
pub use controls::{is_deadlock, Control};
pub use model::{AccountSpec, Case, CurrencySpec, Floor, LedgerSpec, Op, Party, Workload};
pub use runner::{
    ledger_for, ledger_with, run, server_deadlocks, KitError, Outcome, RunLog, ScratchDatabase, Setup, BATCH_SIZES,
};
pub use strategy::{case, ledger_spec, workload, Shape, CURRENCIES, KEY_TEMPLATES};

use proptest::test_runner::Config;

/// Builds `case` on a new scratch database (dropped afterwards), runs its workload with
/// `control` and checks it. `prefix` names the database (`[a-z0-9_]`).
///
/// # Errors
/// When the database cannot be created or read, or the ledger fails while building the spec:
/// never because a property is broken (that is in the [`Report`]).
pub fn check_case(case: &Case, control: Control, prefix: &str) -> Result<Report, KitError> {
    let database = ScratchDatabase::new(prefix)?;
    let ledger = ledger_with(database.url(), case.workload.threads.len(), control)?;
    let setup = Setup::create(&ledger, &case.spec)?;
    let log = run(&ledger, &setup, &case.workload, control);
    let report = check(&ledger, &setup, &log)?;
    // The pool closes before the database is dropped.
    drop(ledger);
    drop(database);
    Ok(report)
}

/// A proptest configuration for database-backed properties: `default_cases` cases unless the
/// `PROPTEST_CASES` environment variable asks for another number, and shrinking bounded (each
/// step is a full run on a real database): at most 64 steps or 60 seconds, whichever comes
/// first (`PROPTEST_MAX_SHRINK_ITERS` and `PROPTEST_MAX_SHRINK_TIME` override them).
///
/// Failures are not persisted by this configuration; set
/// [`failure_persistence`](Config::failure_persistence) to keep them.
pub fn config(default_cases: u32) -> Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    Config {
        cases: env("PROPTEST_CASES").unwrap_or(default_cases),
        max_shrink_iters: env("PROPTEST_MAX_SHRINK_ITERS").unwrap_or(64),
        max_shrink_time: env("PROPTEST_MAX_SHRINK_TIME").unwrap_or(60_000),
        failure_persistence: None,
        ..Config::default()
    }
}

//! The synchronous API on a thread that drives an async runtime: refused with
//! [`LedgerError::AsyncRuntime`] before anything is sent, instead of tokio's panic.
//!
//! The `postgres` client is synchronous by blocking on a small tokio runtime of its own
//! (`Runtime::block_on`). tokio panics ("Cannot start a runtime from within a runtime") when a
//! thread that is already inside a runtime does that: a task of any runtime, the future a
//! `block_on` is polling (the body of `#[tokio::main]` or `#[tokio::test]`). The same client
//! works inside `tokio::task::spawn_blocking` and `tokio::task::block_in_place` (they leave the
//! runtime), and on a thread that only entered a runtime's context (`Handle::enter`), all of
//! which have a current runtime handle too: "a handle exists" is the wrong test, and so is
//! "a task id exists" (a `spawn_blocking` closure is a task).
//!
//! tokio's rule is a thread-local flag it does not expose. Three public signals decide it here,
//! cheapest first:
//!
//! 1. `tokio::runtime::worker_index()` is `Some` only on an entered thread that runs a
//!    scheduler: a task of either runtime flavor, or a current-thread runtime's `block_on`
//!    future. Refused.
//! 2. No current handle (`Handle::try_current()` fails): not entered, since entering sets one.
//!    Allowed. A plain thread, the usual caller, stops here (two thread-local reads).
//! 3. A handle but no scheduler: `spawn_blocking`, `block_in_place` or a `Handle::enter` guard
//!    (allowed), or a `block_on` that runs no scheduler on this thread: a multi-thread runtime's
//!    `block_on` future, `Handle::block_on` (refused). tokio polls a `block_on` future with a
//!    cooperative budget, while blocking code and plain threads run without one, so the budget
//!    tells them apart. tokio shows it only through `coop::poll_proceed`, which takes one unit
//!    and gives it back when its guard drops unused: [`runs_on_budget`] takes units until none is
//!    left (a budget) or more were granted than a budget holds (none), then gives them all back,
//!    leaving the budget as it was.
//!
//! `tests/async_runtime.rs` compares the outcome with tokio's own rule (a nested `block_on`,
//! its panic caught) in each of these places. The one place the signals cannot see is a
//! `block_on` future (of a multi-thread runtime, or `Handle::block_on`) run inside
//! `tokio::task::unconstrained`, which drops the budget: there tokio panics as before.

use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;
use tokio::task::coop;

use crate::error::LedgerError;

/// [`LedgerError::AsyncRuntime`] when the calling thread drives an async runtime, where the
/// `postgres` client's `block_on` would panic; `Ok` wherever it works.
pub(crate) fn refuse_on_runtime_thread() -> Result<(), LedgerError> {
    if drives_async_runtime() {
        Err(LedgerError::AsyncRuntime)
    } else {
        Ok(())
    }
}

/// Whether a `block_on` on this thread would panic (see the module docs for how it is told).
fn drives_async_runtime() -> bool {
    if tokio::runtime::worker_index().is_some() {
        return true;
    }
    if Handle::try_current().is_err() {
        return false;
    }
    runs_on_budget()
}

/// More budget units than tokio's counter can hold (a `u8`; a task starts each poll with 128).
const BUDGET_UNITS_ABOVE_MAX: usize = 256;

/// Whether the current code runs on a tokio cooperative budget: takes budget units until none
/// is left (`true`) or more were granted than a budget holds (`false`: none), then gives every
/// unit back. Each guard restores the budget it found, so they are dropped newest first.
///
/// About 2 µs (optimized) when it has to count them all; called only on threads with a runtime
/// handle and no scheduler. With `--cfg tokio_unstable`, running out counts one forced yield
/// in the runtime's metrics.
fn runs_on_budget() -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut taken = Vec::with_capacity(BUDGET_UNITS_ABOVE_MAX);
    let mut budgeted = false;
    while taken.len() < BUDGET_UNITS_ABOVE_MAX {
        match coop::poll_proceed(&mut cx) {
            Poll::Ready(unit) => taken.push(unit),
            Poll::Pending => {
                budgeted = true;
                break;
            }
        }
    }
    while let Some(unit) = taken.pop() {
        drop(unit);
    }
    budgeted
}

//! What a bench run measures: workloads, modes, thread counts, and the ordered list of points.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::ValueEnum;

/// Which accounts the transfers touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Workload {
    /// Random pairs among all accounts (`--accounts`): little contention.
    Uniform,
    /// Random pairs among 10 accounts: heavy contention.
    Hot,
    /// Two accounts, transfers in both directions: every transfer waits for the previous one.
    Pair,
    /// The expiry section: lapsed holds spread over the `uniform` accounts, drained by expiry
    /// workers. Chosen with `--modes expire,expire-no-skip-locked`, not with `--workloads`.
    #[value(skip)]
    Expiry,
}

impl Workload {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::Hot => "hot",
            Workload::Pair => "pair",
            Workload::Expiry => "expiry",
        }
    }

    /// How many accounts (the first ones) the workload draws from, out of `accounts`.
    pub fn pool(self, accounts: usize) -> usize {
        match self {
            Workload::Uniform | Workload::Expiry => accounts,
            Workload::Hot => HOT_ACCOUNTS.min(accounts),
            Workload::Pair => 2,
        }
    }
}

/// Accounts of the `hot` workload.
pub const HOT_ACCOUNTS: usize = 10;

/// Who sends the transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Mode {
    /// `Ledger::transfer` on a ledger built with combining off: plain per-transfer calls.
    Library,
    /// `Ledger::transfer` on a ledger built with the defaults (adaptive combining).
    Default,
    /// Plain per-transfer calls again, on a second ledger measured interleaved with `library`
    /// (and `default`): the same code against itself, the spread of the comparison (only when
    /// named in --modes).
    #[value(name = "library-twin")]
    LibraryTwin,
    /// `Ledger::hold` then `Ledger::capture` of the whole amount: one two-phase transfer.
    HoldCapture,
    /// pgbench running the library's own transfer statement: the ceiling of the design.
    PgbenchOwnSql,
    /// `pgbench -b tpcb-like`: the familiar yardstick (does not depend on the workload).
    PgbenchTpcbLike,
    /// The library's algorithm as separate statements in a client-side transaction.
    MultiStatement,
    /// Control: read-modify-write without locks (loses money).
    Naive,
    /// Control: row locks taken in request order (deadlocks).
    RequestOrder,
    /// Expiry workers looping `Ledger::expire_holds` over lapsed holds (`FOR UPDATE SKIP LOCKED`).
    Expire,
    /// Control: expiry workers claiming with `FOR UPDATE` without `SKIP LOCKED` (they queue).
    ExpireNoSkipLocked,
    /// `Ledger::transfer` on a ledger built with the combiner (group commit in the process).
    Combined,
    /// `Ledger::transfer_batch` of 1 transfer per call (tps counts transfers).
    #[value(name = "batch-1")]
    Batch1,
    /// `Ledger::transfer_batch` of 10 transfers per call.
    #[value(name = "batch-10")]
    Batch10,
    /// `Ledger::transfer_batch` of 100 transfers per call.
    #[value(name = "batch-100")]
    Batch100,
    /// `Ledger::transfer_batch` of 1,000 transfers per call.
    #[value(name = "batch-1000")]
    Batch1000,
    /// `Ledger::post` of a 3-leg posting (one debit of 2.00, two credits of 1.00); tps counts postings.
    #[value(name = "posting-3")]
    Posting3,
    /// Alternative: conditional `UPDATE ... balance - $1 >= floor` per side in request order.
    FExpression,
    /// Alternative: optimistic version columns, retried on conflict.
    Optimistic,
    /// Alternative: `SERIALIZABLE` transactions, retried on serialization failure.
    Serializable,
    /// `Ledger::transfer` while a durable consumer drains the change feed beside it.
    #[value(name = "library-feed")]
    LibraryFeed,
    /// The async door: `aio::Ledger::transfer` with combining off, from as many tokio tasks as
    /// the point has threads, on a multi-thread runtime with one worker per core. Compared
    /// with `library` (the same calls from threads).
    Async,
    /// The async door with its defaults (adaptive combining across tasks); compared with
    /// `library`, and in the report with `default`.
    #[value(name = "async-default")]
    AsyncDefault,
}

impl Mode {
    /// Every mode, in the order each point runs them.
    pub const ALL: [Mode; 23] = [
        Mode::Library,
        Mode::Default,
        Mode::LibraryTwin,
        Mode::HoldCapture,
        Mode::PgbenchOwnSql,
        Mode::PgbenchTpcbLike,
        Mode::MultiStatement,
        Mode::Naive,
        Mode::RequestOrder,
        Mode::Expire,
        Mode::ExpireNoSkipLocked,
        Mode::Combined,
        Mode::Batch1,
        Mode::Batch10,
        Mode::Batch100,
        Mode::Batch1000,
        Mode::Posting3,
        Mode::FExpression,
        Mode::Optimistic,
        Mode::Serializable,
        Mode::LibraryFeed,
        Mode::Async,
        Mode::AsyncDefault,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Library => "library",
            Mode::Default => "default",
            Mode::LibraryTwin => "library-twin",
            Mode::HoldCapture => "hold-capture",
            Mode::PgbenchOwnSql => "pgbench-own-sql",
            Mode::PgbenchTpcbLike => "pgbench-tpcb-like",
            Mode::MultiStatement => "multi-statement",
            Mode::Naive => "naive",
            Mode::RequestOrder => "request-order",
            Mode::Expire => "expire",
            Mode::ExpireNoSkipLocked => "expire-no-skip-locked",
            Mode::Combined => "combined",
            Mode::Batch1 => "batch-1",
            Mode::Batch10 => "batch-10",
            Mode::Batch100 => "batch-100",
            Mode::Batch1000 => "batch-1000",
            Mode::Posting3 => "posting-3",
            Mode::FExpression => "f-expression",
            Mode::Optimistic => "optimistic",
            Mode::Serializable => "serializable",
            Mode::LibraryFeed => "library-feed",
            Mode::Async => "async",
            Mode::AsyncDefault => "async-default",
        }
    }

    /// Transfers per `transfer_batch` call, for the batch modes.
    pub fn batch_size(self) -> Option<usize> {
        match self {
            Mode::Batch1 => Some(1),
            Mode::Batch10 => Some(10),
            Mode::Batch100 => Some(100),
            Mode::Batch1000 => Some(1_000),
            _ => None,
        }
    }

    /// Whether the mode is one of the alternative strategies compared with ordered row locks.
    pub fn is_alternative(self) -> bool {
        matches!(self, Mode::FExpression | Mode::Optimistic | Mode::Serializable)
    }

    /// Whether the mode is compared with `library` at the same point (`ratio_library`).
    pub fn compares_to_library(self) -> bool {
        matches!(
            self,
            Mode::HoldCapture
                | Mode::Default
                | Mode::LibraryTwin
                | Mode::Combined
                | Mode::Posting3
                | Mode::LibraryFeed
                | Mode::Async
                | Mode::AsyncDefault
        ) || self.batch_size().is_some()
            || self.is_alternative()
    }

    /// Whether the mode is measured interleaved with `library` at the same point (unless
    /// --sequential).
    pub fn interleaves_with_library(self) -> bool {
        matches!(self, Mode::Default | Mode::LibraryTwin)
    }

    /// Whether pgbench runs this mode.
    pub fn is_pgbench(self) -> bool {
        matches!(self, Mode::PgbenchOwnSql | Mode::PgbenchTpcbLike)
    }

    /// Whether the mode is a deliberately broken control.
    pub fn is_control(self) -> bool {
        matches!(self, Mode::Naive | Mode::RequestOrder | Mode::ExpireNoSkipLocked)
    }

    /// Whether the mode belongs to the expiry section (run after the transfer workloads).
    pub fn is_expiry(self) -> bool {
        matches!(self, Mode::Expire | Mode::ExpireNoSkipLocked)
    }
}

/// The bench's settings after `--quick` and the defaults were applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Workloads, in run order.
    pub workloads: Vec<Workload>,
    /// Client thread counts, ascending.
    pub threads: Vec<usize>,
    /// Seconds per measured point.
    pub duration_s: u64,
    /// Accounts of the `uniform` workload.
    pub accounts: usize,
    /// Modes; `modes_explicit` = given with `--modes` (then run at every point).
    pub modes: Vec<Mode>,
    /// Whether `--modes` was given.
    pub modes_explicit: bool,
    /// pgbench's scale factor for tpcb-like.
    pub pgbench_scale: u32,
    /// The report folder.
    pub out: PathBuf,
    /// Whether this is the `--quick` smoke run.
    pub quick: bool,
    /// Seed of the account-pair generator.
    pub seed: u64,
    /// Lapsed holds each expiry run drains.
    pub expiry_holds: usize,
    /// Expiry worker counts, ascending.
    pub expiry_workers: Vec<usize>,
    /// Holds per `expire_holds` call.
    pub expiry_batch: u32,
    /// Times every point is measured, round by round; each point reports its median round.
    pub rounds: usize,
    /// Whether `library` and `default` at one point are measured one after the other instead
    /// of in alternating slices on one database.
    pub sequential: bool,
    /// Combining lanes of the combining modes.
    pub combining_lanes: usize,
}

impl Settings {
    /// Refuses settings that cannot run.
    pub fn check(&self) -> Result<()> {
        ensure!(!self.workloads.is_empty(), "--workloads: give at least one");
        ensure!(!self.modes.is_empty(), "--modes: give at least one");
        ensure!(
            self.threads.iter().all(|&t| (1..=MAX_THREADS).contains(&t)),
            "--threads: each count must be 1 to {MAX_THREADS} (the embedded server allows 250 connections)"
        );
        ensure!(!self.threads.is_empty(), "--threads: give at least one count");
        ensure!(self.duration_s >= 1, "--duration: at least 1 second (pgbench counts whole seconds)");
        ensure!(
            (HOT_ACCOUNTS..=10_000_000).contains(&self.accounts),
            "--accounts: {HOT_ACCOUNTS} to 10,000,000 (the hot workload needs {HOT_ACCOUNTS})"
        );
        ensure!((1..=10_000).contains(&self.pgbench_scale), "--pgbench-scale: 1 to 10,000");
        ensure!((1..=10_000_000).contains(&self.expiry_holds), "--expiry-holds: 1 to 10,000,000");
        ensure!(
            !self.expiry_workers.is_empty() && self.expiry_workers.iter().all(|&w| (1..=MAX_THREADS).contains(&w)),
            "--expiry-workers: give counts of 1 to {MAX_THREADS}"
        );
        ensure!((1..=100_000).contains(&self.expiry_batch), "--expiry-batch: 1 to 100,000");
        ensure!((1..=25).contains(&self.rounds), "--rounds: 1 to 25");
        let lanes = wallet_ledger::limits::COMBINE_LANES_MAX;
        ensure!((1..=lanes).contains(&self.combining_lanes), "--combining-lanes: 1 to {lanes}");
        Ok(())
    }
}

/// Most client threads per point.
pub const MAX_THREADS: usize = 100;

/// One measured point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The workload.
    pub workload: Workload,
    /// Who sends the transfers.
    pub mode: Mode,
    /// Client threads (pgbench clients).
    pub threads: usize,
}

/// The points to measure, in order: per workload, per thread count, every mode that applies,
/// so that the library and its references run back to back; then the expiry section, per worker
/// count (`threads` = expiry workers).
pub fn points(s: &Settings) -> Vec<Point> {
    let mut points = Vec::new();
    for &workload in &s.workloads {
        for &threads in &s.threads {
            for mode in Mode::ALL.into_iter().filter(|m| s.modes.contains(m) && !m.is_expiry()) {
                if applies(s, workload, mode, threads) {
                    points.push(Point { workload, mode, threads });
                }
            }
        }
    }
    let most = s.expiry_workers.last().copied().unwrap_or(1);
    for &threads in &s.expiry_workers {
        for mode in [Mode::Expire, Mode::ExpireNoSkipLocked].into_iter().filter(|m| s.modes.contains(m)) {
            // The control shows queueing; it runs only at the most workers (it is slow).
            if mode == Mode::Expire || threads == most {
                points.push(Point { workload: Workload::Expiry, mode, threads });
            }
        }
    }
    points
}

/// Which modes run where. tpcb-like ignores the workload, so it runs once per thread count,
/// listed under the first workload. Controls show races, so they skip 1 thread (unless that
/// is all there is). multi-statement runs by default on `uniform` at 1 and 8 threads (or the
/// smallest count when neither is asked for); with `--modes` everywhere. hold-capture runs on
/// `uniform` and `hot` (also on `pair` when named in `--modes`).
fn applies(s: &Settings, workload: Workload, mode: Mode, threads: usize) -> bool {
    match mode {
        Mode::HoldCapture => workload != Workload::Pair || s.modes_explicit,
        // A control of the measurement, beside `library` only.
        Mode::LibraryTwin => s.modes_explicit && s.modes.contains(&Mode::Library),
        Mode::PgbenchTpcbLike => workload == s.workloads[0],
        Mode::Naive | Mode::RequestOrder => threads > 1 || s.threads.iter().all(|&t| t == 1),
        Mode::MultiStatement if !s.modes_explicit => {
            let wanted: Vec<usize> = s.threads.iter().copied().filter(|t| [1, 8].contains(t)).collect();
            let at = if wanted.is_empty() { vec![s.threads[0]] } else { wanted };
            workload == Workload::Uniform && at.contains(&threads)
        }
        // Three distinct accounts: never on `pair`.
        Mode::Posting3 if workload == Workload::Pair => false,
        _ if s.modes_explicit => true,
        // The modes, by default where they answer its questions, and few in --quick:
        // the combiner on the contended workloads at every thread count (quick: pair);
        // batch sizes on uniform at 1 and 16 threads (quick: 100); postings on uniform
        // and hot; the alternatives on every workload at 1 and 16 threads (quick: pair).
        Mode::Combined => workload != Workload::Uniform && (!s.quick || workload == Workload::Pair),
        Mode::Batch1 | Mode::Batch10 | Mode::Batch1000 if s.quick => false,
        Mode::Batch1 | Mode::Batch10 | Mode::Batch100 | Mode::Batch1000 => {
            workload == Workload::Uniform && at_one_and_sixteen(s, threads)
        }
        Mode::Posting3 => !s.quick || workload == Workload::Uniform,
        // The feed's consumer under the library's full uniform load, at every thread count.
        Mode::LibraryFeed => workload == Workload::Uniform,
        Mode::FExpression | Mode::Optimistic | Mode::Serializable => {
            at_one_and_sixteen(s, threads) && (!s.quick || workload == Workload::Pair)
        }
        // The async door beside the threads on every workload, at 1 and 16 (its ratios to the
        // synchronous door); not in --quick.
        Mode::Async | Mode::AsyncDefault => !s.quick && at_one_and_sixteen(s, threads),
        _ => true,
    }
}

/// Whether `threads` is 1 or 16, or, when neither is measured, the largest count.
fn at_one_and_sixteen(s: &Settings, threads: usize) -> bool {
    let wanted: Vec<usize> = s.threads.iter().copied().filter(|t| [1, 16].contains(t)).collect();
    if wanted.is_empty() {
        s.threads.last() == Some(&threads)
    } else {
        wanted.contains(&threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(modes: Vec<Mode>, explicit: bool) -> Settings {
        Settings {
            workloads: vec![Workload::Uniform, Workload::Hot, Workload::Pair],
            threads: vec![1, 4],
            duration_s: 1,
            accounts: 100,
            modes,
            modes_explicit: explicit,
            pgbench_scale: 1,
            out: PathBuf::from("unused"),
            quick: false,
            seed: 1,
            expiry_holds: 10,
            expiry_workers: vec![1, 2, 4],
            expiry_batch: 5,
            rounds: 1,
            combining_lanes: 1,
            sequential: false,
        }
    }

    #[test]
    fn hold_capture_runs_on_uniform_and_hot_at_every_thread_count() {
        let points = points(&settings(Mode::ALL.to_vec(), false));
        let at: Vec<(Workload, usize)> =
            points.iter().filter(|p| p.mode == Mode::HoldCapture).map(|p| (p.workload, p.threads)).collect();
        assert_eq!(at, [(Workload::Uniform, 1), (Workload::Uniform, 4), (Workload::Hot, 1), (Workload::Hot, 4)]);
    }

    #[test]
    fn the_async_modes_run_on_every_workload_at_one_and_sixteen_threads() {
        let mut s = settings(Mode::ALL.to_vec(), false);
        s.threads = vec![1, 4, 16, 32];
        let at: Vec<(Workload, usize)> =
            points(&s).iter().filter(|p| p.mode == Mode::Async).map(|p| (p.workload, p.threads)).collect();
        let want = [Workload::Uniform, Workload::Hot, Workload::Pair].into_iter().flat_map(|w| [(w, 1), (w, 16)]);
        assert_eq!(at, want.collect::<Vec<_>>());
        s.quick = true;
        assert!(points(&s).iter().all(|p| p.mode != Mode::AsyncDefault));
    }

    #[test]
    fn expiry_points_come_last_with_the_control_at_the_most_workers() {
        let points = points(&settings(vec![Mode::Library, Mode::Expire, Mode::ExpireNoSkipLocked], true));
        let expiry: Vec<(Mode, usize)> =
            points.iter().skip_while(|p| !p.mode.is_expiry()).map(|p| (p.mode, p.threads)).collect();
        assert!(expiry.iter().all(|(m, _)| m.is_expiry()));
        assert_eq!(expiry, [(Mode::Expire, 1), (Mode::Expire, 2), (Mode::Expire, 4), (Mode::ExpireNoSkipLocked, 4)]);
        assert!(points.iter().filter(|p| p.mode.is_expiry()).all(|p| p.workload == Workload::Expiry));
    }

    #[test]
    fn library_twin_runs_only_when_named_and_beside_library() {
        assert!(points(&settings(Mode::ALL.to_vec(), false)).iter().all(|p| p.mode != Mode::LibraryTwin));
        let named = points(&settings(vec![Mode::Library, Mode::Default, Mode::LibraryTwin], true));
        let modes: Vec<Mode> = named.iter().take(3).map(|p| p.mode).collect();
        assert_eq!(modes, [Mode::Library, Mode::Default, Mode::LibraryTwin]);
        assert_eq!(named.iter().filter(|p| p.mode == Mode::LibraryTwin).count(), 6);
        assert!(points(&settings(vec![Mode::LibraryTwin], true)).is_empty());
    }
}

//! Measuring one point: a fresh copy of the template, the load, the server's counters once
//! they settled, and the audit.

use std::sync::atomic::AtomicU8;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use wallet_ledger::testkit::controls::Control;
use wallet_ledger::testkit::expiry_controls::ExpiryControl;
use wallet_ledger::{aio, CombineConfig, Ledger};

use super::alternatives::Strategy;
use super::db::{money_created, transfer_count, DbStats, Server};
use super::driver::{drive, drive_async, drive_interleaved, Pairs, Sender};
use super::expiry::{self, Expirer, HoldCounts, Tables};
use super::feed;
use super::pgbench::{Pgbench, PgbenchRun};
use super::plan::{Mode, Point, Settings};
use super::progress::Progress;
use super::report::Run;
use super::setup::Accounts;
use super::InvariantBroken;

/// Everything the points share.
pub struct Bench<'a> {
    /// The server.
    pub server: Server,
    /// The settings.
    pub settings: &'a Settings,
    /// The template database every point copies.
    pub template: String,
    /// Its wallets.
    pub accounts: Accounts,
    /// pgbench, when found.
    pub pgbench: Option<Pgbench>,
    /// The tpcb-like database, when initialized.
    pub tpcb_db: Option<String>,
    /// The template with the lapsed holds, built before the first expiry point.
    pub expiry_template: Option<String>,
    /// The progress bar.
    pub progress: Progress,
}

/// What the audit and the balances say after a point.
struct Inspection {
    clean: bool,
    first_violation: Option<String>,
    money: String,
    transfers: i64,
}

impl Bench<'_> {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.settings.duration_s)
    }

    fn pairs(&self, point: Point) -> Pairs {
        Pairs { first: self.accounts.first, pool: point.workload.pool(self.accounts.count) }
    }

    /// Measures one point. Fails loudly when a mode that must keep the ledger sound (the
    /// library, multi-statement, pgbench on the library's SQL) leaves it unclean.
    pub fn measure(&mut self, point: Point) -> Result<Run> {
        let run = match point.mode {
            Mode::Library | Mode::Default | Mode::LibraryTwin => self.rust_point(point, Sender::Library)?,
            Mode::HoldCapture => self.rust_point(point, Sender::HoldCapture)?,
            Mode::Expire => self.expiry_point(point, Expirer::Library)?,
            Mode::ExpireNoSkipLocked => self.expiry_point(point, Expirer::Control(ExpiryControl::NoSkipLocked))?,
            Mode::MultiStatement => self.rust_point(point, Sender::Control(Control::MultiStatement))?,
            Mode::Naive => self.rust_point(point, Sender::Control(Control::Naive))?,
            Mode::RequestOrder => self.rust_point(point, Sender::Control(Control::RequestOrder))?,
            Mode::PgbenchOwnSql => self.own_sql_point(point)?,
            Mode::PgbenchTpcbLike => self.tpcb_point(point)?,
            Mode::Combined => self.rust_point(point, Sender::Library)?,
            Mode::Batch1 | Mode::Batch10 | Mode::Batch100 | Mode::Batch1000 => {
                self.rust_point(point, Sender::Batch(point.mode.batch_size().unwrap_or(1)))?
            }
            Mode::Posting3 => self.rust_point(point, Sender::Posting3)?,
            Mode::FExpression => self.rust_point(point, Sender::Alternative(Strategy::FExpression))?,
            Mode::Optimistic => self.rust_point(point, Sender::Alternative(Strategy::Optimistic))?,
            Mode::Serializable => self.rust_point(point, Sender::Alternative(Strategy::Serializable))?,
            Mode::LibraryFeed => self.rust_point(point, Sender::Library)?,
            Mode::Async | Mode::AsyncDefault => self.async_point(point)?,
        };
        if !point.mode.is_control() && run.audit_clean == Some(false) {
            return Err(InvariantBroken(format!(
                "AUDIT FAILED: the ledger is not clean after {} {} at {} threads: {}",
                run.workload,
                run.mode,
                run.threads,
                run.first_error.as_deref().unwrap_or("see report")
            ))
            .into());
        }
        Ok(run)
    }

    /// A fresh copy of the template (or of `from`) for `point`: its name and URL.
    fn fresh_db(&mut self, point: Point, from: Option<&str>) -> Result<(String, String)> {
        let short = format!("{}_{}_{}", point.workload.name(), point.mode.name().replace('-', "_"), point.threads);
        let name = self.server.db_name(&short);
        let url = self.server.create(&name, Some(from.unwrap_or(&self.template)))?;
        self.server.checkpoint();
        Ok((name, url))
    }

    /// The library or a control, driven by Rust client threads.
    fn rust_point(&mut self, point: Point, sender: Sender) -> Result<Run> {
        let (name, url) = self.fresh_db(point, None)?;
        let lanes = self.settings.combining_lanes;
        let mut builder = Ledger::builder(&url).pool_size(point.threads as u32).migrate(false).combining_lanes(lanes);
        builder = match point.mode {
            // The defaults: adaptive combining.
            Mode::Default => builder,
            Mode::Combined => builder.combine(CombineConfig::default()),
            // Plain per-transfer calls: the reference every other mode is compared with.
            _ => builder.combining(false),
        };
        let ledger = builder.build().with_context(|| format!("connect to {name}"))?;
        // Open every connection now, as pgbench does before its clock starts.
        let held = (0..point.threads).map(|_| ledger.connection()).collect::<Result<Vec<_>, _>>()?;
        drop(held);
        let seed = self.settings.seed;
        let pairs = self.pairs(point);
        let (duration, progress) = (self.duration(), &self.progress);
        let run_load = || drive(&ledger, sender, pairs, point.threads, duration, seed, progress);
        let (load, before, fed) = if point.mode == Mode::LibraryFeed {
            feed::catch_up(&url)?;
            let before = self.server.stats(&name)?;
            let (load, fed) = feed::beside(&url, run_load)?;
            (load, before, Some(fed))
        } else {
            let before = self.server.stats(&name)?;
            (run_load(), before, None)
        };
        drop(ledger);
        let after = self.server.settled_stats(&name)?;
        let seen = inspect(&url)?;
        self.server.drop_db(&name)?;
        let secs = load.elapsed.as_secs_f64();
        let rollbacks = after.rollbacks - before.rollbacks;
        let retries = match sender {
            Sender::Alternative(_) => load.retries as i64,
            _ if sender.is_library() => (rollbacks - load.errors as i64).max(0),
            _ => 0,
        };
        Ok(Run {
            transfers: load.ok,
            tps: load.ok as f64 / secs,
            duration_s: secs,
            retries: Some(retries),
            aborts: matches!(sender, Sender::Alternative(_)).then_some(rollbacks),
            refusals: Some(load.refusals),
            errors: load.errors,
            first_error: load.first_error.or(seen.first_violation.clone()),
            feed_delivered: fed.as_ref().map(|f| f.delivered),
            feed_p50_ms: fed.as_ref().and_then(|f| f.latency.quantile_ms(0.50)),
            feed_p99_ms: fed.as_ref().and_then(|f| f.latency.quantile_ms(0.99)),
            feed_max_lag: fed.as_ref().map(|f| f.max_lag),
            feed_drain_ms: fed.as_ref().map(|f| f.drain.as_secs_f64() * 1000.0),
            ..base(point, &load.latency, after.deadlocks - before.deadlocks, Some(&seen))
        })
    }

    /// Plain calls (`points[0]`, mode `library`) and the modes measured beside them at the same
    /// point (`default`, `library-twin`), together on one fresh database in alternating slices
    /// of [`SLICE`] (for two: plain, default, default, plain, and again), the point's duration
    /// each: a drift of the machine's speed falls on all alike, so their ratios are the code's,
    /// not the minute's. The server's deadlock and rollback counters and the audit cover them
    /// together; each run reports them whole.
    pub fn interleaved(&mut self, points: &[Point]) -> Result<Vec<Run>> {
        let first = points[0];
        let (name, url) = self.fresh_db(first, None)?;
        let lanes = self.settings.combining_lanes;
        let open = |mode: Mode| -> Result<Ledger> {
            let builder = Ledger::builder(&url).pool_size(first.threads as u32).migrate(false).combining_lanes(lanes);
            let ledger = if mode == Mode::Default { builder } else { builder.combining(false) }
                .build()
                .with_context(|| format!("connect to {name}"))?;
            // Open every connection now, as pgbench does before its clock starts.
            let held = (0..first.threads).map(|_| ledger.connection()).collect::<Result<Vec<_>, _>>()?;
            drop(held);
            Ok(ledger)
        };
        let ledgers = points.iter().map(|p| open(p.mode)).collect::<Result<Vec<_>>>()?;
        let order = slice_order(points.len(), self.duration());
        let before = self.server.stats(&name)?;
        let loads = drive_interleaved(
            &ledgers.iter().collect::<Vec<_>>(),
            Sender::Library,
            self.pairs(first),
            first.threads,
            (SLICE, &order),
            self.settings.seed,
            &self.progress,
        );
        drop(ledgers);
        let after = self.server.settled_stats(&name)?;
        let seen = inspect(&url)?;
        self.server.drop_db(&name)?;
        let (deadlocks, rollbacks) = (after.deadlocks - before.deadlocks, after.rollbacks - before.rollbacks);
        let errors: u64 = loads.iter().map(|l| l.errors).sum();
        let runs = points
            .iter()
            .zip(loads)
            .map(|(&point, load)| {
                let secs = load.elapsed.as_secs_f64();
                Run {
                    transfers: load.ok,
                    tps: load.ok as f64 / secs,
                    duration_s: secs,
                    retries: Some((rollbacks - errors as i64).max(0)),
                    refusals: Some(load.refusals),
                    errors: load.errors,
                    first_error: load.first_error.or(seen.first_violation.clone()),
                    interleaved: true,
                    ..base(point, &load.latency, deadlocks, Some(&seen))
                }
            })
            .collect();
        Ok(runs)
    }

    /// The async door, driven by tokio tasks on a multi-thread runtime with one worker thread
    /// per core (as an async backend runs): as many tasks as the point has threads.
    fn async_point(&mut self, point: Point) -> Result<Run> {
        let (name, url) = self.fresh_db(point, None)?;
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build()?;
        let tasks = point.threads;
        let ledger = runtime
            .block_on(
                aio::Ledger::builder(&url)
                    .pool_size(tasks as u32)
                    .migrate(false)
                    .combining(point.mode == Mode::AsyncDefault)
                    .combining_lanes(self.settings.combining_lanes)
                    .build(),
            )
            .with_context(|| format!("connect to {name}"))?;
        // Open every connection now, as pgbench does before its clock starts.
        runtime.block_on(async {
            let held = open_connections(&ledger, tasks).await?;
            drop(held);
            Ok::<_, wallet_ledger::LedgerError>(())
        })?;
        let before = self.server.stats(&name)?;
        let load = drive_async(
            &runtime,
            &ledger,
            self.pairs(point),
            tasks,
            self.duration(),
            self.settings.seed,
            &self.progress,
        );
        drop(ledger);
        drop(runtime);
        let after = self.server.settled_stats(&name)?;
        let seen = inspect(&url)?;
        self.server.drop_db(&name)?;
        let secs = load.elapsed.as_secs_f64();
        let rollbacks = after.rollbacks - before.rollbacks;
        Ok(Run {
            transfers: load.ok,
            tps: load.ok as f64 / secs,
            duration_s: secs,
            retries: Some((rollbacks - load.errors as i64).max(0)),
            refusals: Some(load.refusals),
            errors: load.errors,
            first_error: load.first_error.or(seen.first_violation.clone()),
            ..base(point, &load.latency, after.deadlocks - before.deadlocks, Some(&seen))
        })
    }

    /// The expiry template's name, built on first use.
    fn expiry_template(&mut self) -> Result<String> {
        if let Some(name) = &self.expiry_template {
            return Ok(name.clone());
        }
        let (holds, name) = (self.settings.expiry_holds, self.server.db_name("expiry_template"));
        self.progress.set_message(format!("setting up {holds} lapsed holds"));
        let start = Instant::now();
        expiry::build_template(&mut self.server, &self.template, &name, self.accounts, holds, self.settings.seed)
            .context("set up the lapsed holds")?;
        self.progress.log(&format!("{holds} lapsed holds ready in {:.1} s", start.elapsed().as_secs_f64()));
        self.expiry_template = Some(name.clone());
        Ok(name)
    }

    /// Expiry workers (`point.threads` of them) draining a fresh copy of the lapsed holds, while
    /// a sampler counts the workers waiting for locks.
    fn expiry_point(&mut self, point: Point, expirer: Expirer) -> Result<Run> {
        let template = self.expiry_template()?;
        let (name, url) = self.fresh_db(point, Some(&template))?;
        let tables = Tables::read(&url)?;
        let ledger = Ledger::builder(&url)
            .pool_size(point.threads as u32)
            .migrate(false)
            .build()
            .with_context(|| format!("connect to {name}"))?;
        let held = (0..point.threads).map(|_| ledger.connection()).collect::<Result<Vec<_>, _>>()?;
        drop(held);
        let before = self.server.stats(&name)?;
        let (admin_url, batch) = (self.server.admin_url().to_string(), self.settings.expiry_batch);
        let phase = AtomicU8::new(expiry::BEFORE);
        let (drained, samples) = thread::scope(|scope| {
            let sampler = scope.spawn(|| expiry::sample_locks(&admin_url, &name, tables, &phase));
            let drained = expiry::drain(&ledger, expirer, point.threads, batch, &phase);
            (drained, sampler.join().map_err(|_| anyhow!("the lock sampler panicked")))
        });
        let samples = samples??;
        drop(ledger);
        let after = self.server.settled_stats(&name)?;
        let seen = inspect(&url)?;
        let counts = HoldCounts::read(&url)?;
        self.server.drop_db(&name)?;
        let problem = counts.problem(self.settings.expiry_holds);
        let secs = drained.elapsed.as_secs_f64();
        let retries = match expirer {
            Expirer::Library => (after.rollbacks - before.rollbacks - drained.errors as i64).max(0),
            Expirer::Control(_) => 0,
        };
        let mut run = base(point, &drained.latency, after.deadlocks - before.deadlocks, Some(&seen));
        run.audit_clean = Some(seen.clean && problem.is_none());
        Ok(Run {
            tps: counts.expired as f64 / secs,
            duration_s: secs,
            retries: Some(retries),
            errors: drained.errors,
            first_error: drained.first_error.or(seen.first_violation.clone()).or(problem),
            holds_expired: Some(counts.expired.max(0) as u64),
            expire_calls: Some(drained.calls),
            expiry_batch: Some(batch),
            lock_samples: Some(samples.samples),
            lock_wait_samples: Some(samples.with_waiter),
            hold_lock_wait_samples: Some(samples.on_holds),
            account_lock_wait_samples: Some(samples.on_accounts),
            lock_wait_share: samples.wait_share(point.threads),
            max_lock_waiters: Some(samples.max_waiters),
            busy_share: (secs > 0.0).then(|| drained.busy.as_secs_f64() / (secs * point.threads as f64)),
            ..run
        })
    }

    /// pgbench sending the library's own statement.
    fn own_sql_point(&mut self, point: Point) -> Result<Run> {
        let (name, url) = self.fresh_db(point, None)?;
        let transfers_before = transfer_count(&mut postgres::Client::connect(&url, postgres::NoTls)?)?;
        let before = self.server.stats(&name)?;
        let pgbench = self.pgbench.as_ref().context("pgbench is not available")?;
        let out = pgbench.own_sql(&url, self.pairs(point), point.threads, self.settings.duration_s, &self.progress)?;
        let after = self.server.settled_stats(&name)?;
        let seen = inspect(&url)?;
        self.server.drop_db(&name)?;
        let committed = (seen.transfers - transfers_before).max(0) as u64;
        Ok(Run {
            refusals: Some(out.processed.saturating_sub(out.failed).saturating_sub(committed)),
            first_error: seen.first_violation.clone(),
            ..pgbench_run(point, &out, after.deadlocks - before.deadlocks, Some(&seen), self.settings.duration_s)
        })
    }

    /// `pgbench -b tpcb-like` on its own database.
    fn tpcb_point(&mut self, point: Point) -> Result<Run> {
        let name = self.tpcb_db.clone().context("the tpcb-like database was not initialized")?;
        self.server.checkpoint();
        let before: DbStats = self.server.stats(&name)?;
        let pgbench = self.pgbench.as_ref().context("pgbench is not available")?;
        let url = self.server.url(&name);
        let out = pgbench.tpcb_like(&url, point.threads, self.settings.duration_s, &self.progress)?;
        let after = self.server.settled_stats(&name)?;
        Ok(pgbench_run(point, &out, after.deadlocks - before.deadlocks, None, self.settings.duration_s))
    }
}

/// A run record from pgbench's figures.
fn pgbench_run(point: Point, out: &PgbenchRun, deadlocks: i64, seen: Option<&Inspection>, secs: u64) -> Run {
    Run {
        transfers: out.processed,
        tps: out.tps,
        duration_s: secs as f64,
        errors: out.failed,
        ..base(point, &out.latency, deadlocks, seen)
    }
}

/// The fields every mode fills the same way; the rest zero or null.
fn base(point: Point, latency: &super::hist::Histogram, deadlocks: i64, seen: Option<&Inspection>) -> Run {
    Run {
        workload: point.workload.name(),
        mode: point.mode.name(),
        threads: point.threads,
        duration_s: 0.0,
        transfers: 0,
        tps: 0.0,
        p50_ms: latency.quantile_ms(0.50),
        p99_ms: latency.quantile_ms(0.99),
        max_ms: latency.max_ms(),
        mean_ms: latency.mean_ms(),
        retries: None,
        aborts: None,
        refusals: None,
        errors: 0,
        deadlocks,
        audit_clean: seen.map(|s| s.clean),
        money_created: seen.map(|s| s.money.clone()),
        ratio_pgbench_own_sql: None,
        ratio_pgbench_tpcb_like: None,
        ratio_library: None,
        first_error: None,
        holds_expired: None,
        expire_calls: None,
        expiry_batch: None,
        lock_samples: None,
        lock_wait_samples: None,
        hold_lock_wait_samples: None,
        account_lock_wait_samples: None,
        lock_wait_share: None,
        max_lock_waiters: None,
        busy_share: None,
        feed_delivered: None,
        feed_p50_ms: None,
        feed_p99_ms: None,
        feed_max_lag: None,
        feed_drain_ms: None,
        rounds_tps: Vec::new(),
        interleaved: false,
    }
}

/// One slice of an interleaved measurement ([`Bench::interleaved`]).
pub const SLICE: Duration = Duration::from_millis(500);

/// Which of `n` interleaved ledgers each slice uses, for `duration` each: slices of [`SLICE`]
/// in the order 0 1 .. n-1, then back, n-1 .. 1 0, repeated (a drift that is linear over one
/// round trip falls on all alike), as many as fill `duration` for each (at least one each).
pub fn slice_order(n: usize, duration: Duration) -> Vec<usize> {
    let each = (duration.as_millis() / SLICE.as_millis()).max(1) as usize;
    (0..n * each).map(|k| if (k / n) % 2 == 0 { k % n } else { n - 1 - k % n }).collect()
}

/// Audits the ledger at `url` and sums its balances.
fn inspect(url: &str) -> Result<Inspection> {
    let ledger = Ledger::builder(url).pool_size(1).migrate(false).build().context("connect for the audit")?;
    let audit = ledger.verify().context("audit")?;
    let mut conn = ledger.connection()?;
    let money = money_created(conn.client())?;
    let transfers = transfer_count(conn.client())?;
    Ok(Inspection {
        clean: audit.is_clean(),
        first_violation: audit
            .violations
            .first()
            .map(|v| format!("audit: {v} ({} violations)", audit.violations.len())),
        money: money.to_string(),
        transfers,
    })
}

/// `n` connections of `ledger`'s pool checked out at once (so the pool opens them all).
async fn open_connections(
    ledger: &aio::Ledger,
    n: usize,
) -> Result<Vec<aio::deadpool_postgres::Object>, wallet_ledger::LedgerError> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(ledger.connection().await?);
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_go_there_and_back_and_give_each_ledger_its_duration() {
        assert_eq!(slice_order(2, Duration::from_secs(1)), [0, 1, 1, 0]);
        assert_eq!(slice_order(2, Duration::from_secs(3)), [0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0]);
        assert_eq!(slice_order(3, Duration::from_secs(1)), [0, 1, 2, 2, 1, 0]);
        // A point shorter than a slice still gets one slice each.
        assert_eq!(slice_order(2, Duration::from_millis(100)), [0, 1]);
        let order = slice_order(3, Duration::from_secs(5));
        assert!((0..3).all(|n| order.iter().filter(|&&k| k == n).count() == 10));
    }
}

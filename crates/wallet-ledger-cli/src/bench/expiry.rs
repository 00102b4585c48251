//! The expiry section: a template of lapsed holds spread over the `uniform` accounts, expiry
//! workers draining a fresh copy of it with `expire_holds` until there is nothing left, a
//! sampler of the server's lock table while they run, and the check that every hold was
//! expired exactly once.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use postgres::{Client, NoTls};
use wallet_ledger::testkit::expiry_controls::ExpiryControl;
use wallet_ledger::{Ledger, LedgerError};

use super::db::Server;
use super::driver::AMOUNT;
use super::hist::Histogram;
use super::setup::Accounts;

/// How often the sampler reads `pg_locks`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Longest wait for the holds to lapse after they were created.
const LAPSE_WAIT: Duration = Duration::from_secs(30);

/// Holds created per transaction while building the expiry template.
const HOLDS_PER_TRANSACTION: usize = 2_000;

/// Creates database `name` as a copy of `template` plus `holds` pending holds of 1.00 between
/// random distinct wallets, each lapsing 1 to 1000 ms after its creating transaction started,
/// and waits until all have lapsed.
///
/// The holds are made by the library's own `wallet_ledger.hold` function, the one
/// `Ledger::hold` calls (ordered account locks, the floor check on the available balance, the
/// hold row, its `created` event), once per hold inside a server-side statement per
/// [`HOLDS_PER_TRANSACTION`] holds, without a round trip per hold. The random pairs are seeded,
/// so every run gets the same holds.
pub fn build_template(
    server: &mut Server,
    template: &str,
    name: &str,
    accounts: Accounts,
    holds: usize,
    seed: u64,
) -> Result<()> {
    let url = server.create(name, Some(template))?;
    let mut client = Client::connect(&url, NoTls).with_context(|| format!("connect to {name}"))?;
    // setseed takes -1 to 1; any seed maps to a reproducible value in that range.
    let unit = (seed % 2_000_001) as f64 / 1_000_000.0 - 1.0;
    client.execute("SELECT setseed($1)", &[&unit]).context("seed the hold pairs")?;
    let sql = format!(
        "SELECT count(*) FROM (
           SELECT g.i, floor(random() * $3)::bigint AS a, floor(random() * ($3 - 1))::bigint AS b
             FROM generate_series($1::bigint, $2::bigint) AS g(i)) p
         CROSS JOIN LATERAL wallet_ledger.hold(
           $4 + p.a, $4 + CASE WHEN p.b >= p.a THEN p.b + 1 ELSE p.b END, {AMOUNT},
           1 + p.i % 1000, 'bench-expiry-' || p.i, NULL, 0::smallint, 0) h
         WHERE h.outcome = 'ok'"
    );
    let statement = client.prepare(&sql).context("prepare the hold creation")?;
    let pool = accounts.count as f64;
    for first in (1..=holds).step_by(HOLDS_PER_TRANSACTION) {
        let (first, last) = (first as i64, (first + HOLDS_PER_TRANSACTION - 1).min(holds) as i64);
        let made: i64 = client
            .query_one(&statement, &[&first, &last, &pool, &accounts.first])
            .with_context(|| format!("create holds {first} to {last}"))?
            .get(0);
        ensure!(made == last - first + 1, "created {made} of holds {first} to {last}");
        // Fresh statistics, so the functions' cached plans are made for the tables' real size.
        client.batch_execute("ANALYZE wallet_ledger.holds, wallet_ledger.hold_events").context("analyze the holds")?;
    }
    wait_lapsed(&mut client)?;
    client.batch_execute("VACUUM ANALYZE").context("vacuum the expiry template")?;
    drop(client);
    server.wait_idle(name)
}

/// Waits until no pending hold expires in the future.
fn wait_lapsed(client: &mut Client) -> Result<()> {
    let start = Instant::now();
    loop {
        let waiting: i64 = client
            .query_one("SELECT count(*) FROM wallet_ledger.holds WHERE state = 'pending' AND expires_at > now()", &[])
            .context("count holds not yet lapsed")?
            .get(0);
        if waiting == 0 {
            return Ok(());
        }
        ensure!(start.elapsed() < LAPSE_WAIT, "{waiting} holds had not lapsed after {LAPSE_WAIT:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Who expires the holds.
#[derive(Debug, Clone, Copy)]
pub enum Expirer {
    /// `Ledger::expire_holds`.
    Library,
    /// A broken expiry worker of the testkit.
    Control(ExpiryControl),
}

impl Expirer {
    fn expire(self, ledger: &Ledger, batch: u32) -> Result<usize, LedgerError> {
        match self {
            Expirer::Library => ledger.expire_holds(batch),
            Expirer::Control(c) => c.expire_holds(ledger, batch),
        }
    }
}

/// Where a drain is: the sampler counts only while it runs.
pub const BEFORE: u8 = 0;
/// The workers are running.
pub const RUNNING: u8 = 1;
/// Every worker stopped.
pub const DONE: u8 = 2;

/// What the expiry workers saw.
#[derive(Default)]
pub struct Drain {
    /// Holds the workers' calls reported expired.
    pub expired: u64,
    /// `expire_holds` calls, the final empty ones included.
    pub calls: u64,
    /// Failed calls (each stops its worker).
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// Latency of every call.
    pub latency: Histogram,
    /// Time the workers spent inside `expire_holds`, summed over workers.
    pub busy: Duration,
    /// From the start signal until the last worker stopped.
    pub elapsed: Duration,
}

impl Drain {
    fn merge(&mut self, other: Drain) {
        self.expired += other.expired;
        self.calls += other.calls;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.latency.merge(&other.latency);
        self.busy += other.busy;
    }
}

/// `workers` threads, each calling `expire_holds(batch)` until a call returns 0 (nothing it
/// can claim is left) or fails. `phase` goes RUNNING when they start and DONE when the last
/// one stopped.
pub fn drain(ledger: &Ledger, expirer: Expirer, workers: usize, batch: u32, phase: &AtomicU8) -> Drain {
    let barrier = Barrier::new(workers + 1);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    worker(ledger, expirer, batch)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        phase.store(RUNNING, Ordering::SeqCst);
        let mut total = Drain::default();
        for h in handles {
            total.merge(h.join().expect("expiry worker thread panicked"));
        }
        total.elapsed = start.elapsed();
        phase.store(DONE, Ordering::SeqCst);
        total
    })
}

fn worker(ledger: &Ledger, expirer: Expirer, batch: u32) -> Drain {
    let mut out = Drain::default();
    loop {
        let start = Instant::now();
        let result = expirer.expire(ledger, batch);
        let took = start.elapsed();
        out.latency.record(took);
        out.busy += took;
        out.calls += 1;
        match result {
            Ok(0) => return out,
            Ok(n) => out.expired += n as u64,
            Err(e) => {
                out.errors += 1;
                out.first_error = Some(format!("{:#}", anyhow::Error::new(e)));
                return out;
            }
        }
    }
}

/// What the lock sampler saw while the workers ran.
#[derive(Debug, Default, Clone, Copy)]
pub struct LockSamples {
    /// Samples taken.
    pub samples: u64,
    /// Samples in which at least one backend of the database waited for a lock.
    pub with_waiter: u64,
    /// Samples in which a backend waited for a row of `wallet_ledger.holds`.
    pub on_holds: u64,
    /// Samples in which a backend waited for a row of `wallet_ledger.accounts`.
    pub on_accounts: u64,
    /// Waiting backends, summed over samples.
    pub waiters: u64,
    /// Most backends waiting in one sample.
    pub max_waiters: u64,
}

impl LockSamples {
    /// Estimated share of the workers' time spent waiting for a lock: the mean number of
    /// waiting backends over the run, divided by the workers.
    pub fn wait_share(&self, workers: usize) -> Option<f64> {
        (self.samples > 0).then(|| self.waiters as f64 / (self.samples as f64 * workers as f64))
    }
}

/// The tables whose row-lock waits the sampler tells apart (their oids in the run's database).
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    /// `wallet_ledger.accounts`.
    pub accounts: u32,
    /// `wallet_ledger.holds`.
    pub holds: u32,
}

impl Tables {
    /// Reads the oids from the database at `url`.
    pub fn read(url: &str) -> Result<Tables> {
        let mut client = Client::connect(url, NoTls).context("connect to read the table oids")?;
        let row = client
            .query_one("SELECT 'wallet_ledger.accounts'::regclass::oid, 'wallet_ledger.holds'::regclass::oid", &[])
            .context("read the table oids")?;
        Ok(Tables { accounts: row.get(0), holds: row.get(1) })
    }
}

/// Waiting backends of a database with, when the wait is for a row, the row's table: a backend
/// queued behind a row lock either waits for the row's tuple lock (`locktype = 'tuple'`, with
/// the table) or holds that tuple lock and waits for the locker's transaction to end.
const WAITERS: &str = "SELECT w.pid, CASE WHEN w.locktype = 'tuple' THEN w.relation ELSE t.relation END
  FROM pg_locks w JOIN pg_stat_activity a ON a.pid = w.pid
  LEFT JOIN pg_locks t ON t.pid = w.pid AND t.locktype = 'tuple' AND t.granted
 WHERE NOT w.granted AND a.datname = $1";

/// Every [`SAMPLE_EVERY`] while `phase` is RUNNING, finds the backends connected to database
/// `db` that wait for a lock (`pg_locks` rows not granted) and on which table. Connects to
/// `admin_url`, so the sampler is never one of the backends it counts. Returns when `phase` is
/// DONE.
pub fn sample_locks(admin_url: &str, db: &str, tables: Tables, phase: &AtomicU8) -> Result<LockSamples> {
    let mut client = Client::connect(admin_url, NoTls).context("connect the lock sampler")?;
    let query = client.prepare(WAITERS).context("prepare the lock sample")?;
    let mut out = LockSamples::default();
    let mut pids: Vec<i32> = Vec::new();
    loop {
        let state = phase.load(Ordering::SeqCst);
        if state == DONE {
            return Ok(out);
        }
        let tick = Instant::now();
        if state == RUNNING {
            let rows = client.query(&query, &[&db]).context("sample pg_locks")?;
            let on = |table: u32| rows.iter().any(|r| r.get::<_, Option<u32>>(1) == Some(table));
            pids.clear();
            pids.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
            pids.sort_unstable();
            pids.dedup();
            let waiting = pids.len() as u64;
            out.samples += 1;
            out.waiters += waiting;
            out.with_waiter += u64::from(waiting > 0);
            out.on_holds += u64::from(on(tables.holds));
            out.on_accounts += u64::from(on(tables.accounts));
            out.max_waiters = out.max_waiters.max(waiting);
        }
        thread::sleep(SAMPLE_EVERY.saturating_sub(tick.elapsed()));
    }
}

/// The hold counts after a drain.
#[derive(Debug, Clone, Copy)]
pub struct HoldCounts {
    /// Holds still pending.
    pub pending: i64,
    /// Holds in state `expired`.
    pub expired: i64,
    /// `expired` events.
    pub events: i64,
    /// Holds with an `expired` event.
    pub holds_with_event: i64,
}

impl HoldCounts {
    /// Reads them from the database at `url`.
    pub fn read(url: &str) -> Result<HoldCounts> {
        let mut client = Client::connect(url, NoTls).context("connect to count the holds")?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM wallet_ledger.holds WHERE state = 'pending'),
                        (SELECT count(*) FROM wallet_ledger.holds WHERE state = 'expired'),
                        (SELECT count(*) FROM wallet_ledger.hold_events WHERE event = 'expired'),
                        (SELECT count(DISTINCT hold_id) FROM wallet_ledger.hold_events WHERE event = 'expired')",
                &[],
            )
            .context("count the holds")?;
        Ok(HoldCounts { pending: row.get(0), expired: row.get(1), events: row.get(2), holds_with_event: row.get(3) })
    }

    /// `None` when every one of `holds` holds was expired exactly once; otherwise what is wrong.
    pub fn problem(&self, holds: usize) -> Option<String> {
        let n = holds as i64;
        let ok = self.pending == 0 && self.expired == n && self.events == n && self.holds_with_event == n;
        (!ok).then(|| {
            format!(
                "holds: {} pending, {} expired, {} expired events on {} holds (want 0, {n}, {n}, {n})",
                self.pending, self.expired, self.events, self.holds_with_event
            )
        })
    }
}

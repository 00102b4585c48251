//! Builds a [`LedgerSpec`] in a real database ([`Setup`]) and runs a [`Workload`] on it from
//! real threads over real pooled connections ([`run`]), recording every outcome ([`RunLog`]).

use std::str::FromStr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::controls::Control;
use super::model::{LedgerSpec, Op, Party, Workload};
use crate::{AccountId, Ledger, LedgerError, NewAccount, Receipt, Transfer};
use wallet_ledger_embedded::embedded::{self, EmbeddedError};

/// Why a case could not be set up or run (never a property violation: those are findings in a
/// [`Report`](super::Report)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KitError {
    /// The ledger refused or failed while building the spec or reading the final state.
    #[error("ledger")]
    Ledger(#[from] LedgerError),
    /// No database could be created.
    #[error("database")]
    Embedded(#[from] EmbeddedError),
    /// A statement on the scratch database's server failed.
    #[error("scratch database")]
    Postgres(#[from] postgres::Error),
}

/// A [`LedgerSpec`] built in a database: the ids of its accounts and what they held when the
/// workload started.
///
/// Caller idempotency keys are prefixed with a per-setup namespace, so several setups can share
/// one database; the checker still expects the database to be used by nothing else while a
/// workload runs (it attributes every transfer committed after the setup to the workload).
#[derive(Debug, Clone)]
pub struct Setup {
    /// The spec that was built.
    pub spec: LedgerSpec,
    /// The account of each [`AccountSpec`](super::AccountSpec), by index.
    pub accounts: Vec<AccountId>,
    /// The unbounded issuer of each currency, by index; it funded the opening balances.
    pub issuers: Vec<AccountId>,
    /// An id that names no account, for [`Party::Unknown`].
    pub unknown: AccountId,
    /// The balance of each account (by index) when the workload starts.
    pub opening: Vec<Decimal>,
    /// The version of each account (by index) when the workload starts.
    pub opening_versions: Vec<i64>,
    /// The balance and version of each issuer when the workload starts.
    pub issuer_opening: Vec<(Decimal, i64)>,
    /// Every transfer with a greater id was made by the workload.
    pub last_setup_transfer: i64,
    /// Prepended to every caller idempotency key of the workload.
    pub key_prefix: String,
}

impl Setup {
    /// Defines the spec's currencies, opens an unbounded issuer per currency and the spec's
    /// accounts (all at zero, as the ledger opens every account), then funds each opening
    /// balance with one transfer from its issuer.
    ///
    /// # Errors
    /// Whatever the ledger returns while building: a correct ledger returns none.
    pub fn create(ledger: &Ledger, spec: &LedgerSpec) -> Result<Setup, KitError> {
        let mut issuers = Vec::with_capacity(spec.currencies.len());
        for c in &spec.currencies {
            ledger.define_currency(&c.code, c.scale)?;
            issuers.push(
                ledger.open_account(&NewAccount::new(&c.code).name(format!("issuer {}", c.code)).unbounded())?.id,
            );
        }
        let mut accounts = Vec::with_capacity(spec.accounts.len());
        for (i, a) in spec.accounts.iter().enumerate() {
            let mut new = NewAccount::new(&spec.currencies[a.currency].code).name(format!("a{i}"));
            new = match a.floor.min_balance() {
                Some(floor) => new.min_balance(floor),
                None => new.unbounded(),
            };
            let id = ledger.open_account(&new)?.id;
            if a.opening > Decimal::ZERO {
                ledger.transfer(&Transfer::new(issuers[a.currency], id, a.opening))?;
            }
            accounts.push(id);
        }
        let mut conn = ledger.connection()?;
        let last_setup_transfer = conn.sql("SELECT coalesce(max(id), 0) FROM wallet_ledger.transfers").into_owned();
        let max_account = conn.sql("SELECT coalesce(max(id), 0) FROM wallet_ledger.accounts").into_owned();
        let client = conn.client();
        let last_setup_transfer: i64 = client.query_one(&last_setup_transfer, &[])?.get(0);
        // Identity values only grow, so an id this far past the largest one is never taken
        // while the workload runs.
        let max_account: i64 = client.query_one(&max_account, &[])?.get(0);
        let state = |id: AccountId| -> Result<(Decimal, i64), KitError> {
            let account = ledger.account(id)?;
            Ok((account.balance, account.version))
        };
        let (mut opening, mut opening_versions) = (Vec::new(), Vec::new());
        for id in &accounts {
            let (balance, version) = state(*id)?;
            opening.push(balance);
            opening_versions.push(version);
        }
        let issuer_opening = issuers.iter().map(|id| state(*id)).collect::<Result<_, _>>()?;
        Ok(Setup {
            spec: spec.clone(),
            accounts,
            issuers,
            unknown: AccountId(max_account + 1_000_000_000),
            opening,
            opening_versions,
            issuer_opening,
            last_setup_transfer,
            key_prefix: format!("case-{}/", uuid::Uuid::now_v7().simple()),
        })
    }

    /// The database id of a party.
    pub fn id(&self, party: Party) -> AccountId {
        match party {
            Party::Account(i) => self.accounts[i],
            Party::Unknown => self.unknown,
        }
    }

    /// The key an operation's key is sent as.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// The [`Transfer`] an operation sends.
    pub fn transfer(&self, op: &Op) -> Transfer {
        let t = Transfer::new(self.id(op.from), self.id(op.to), op.amount);
        match &op.key {
            Some(key) => t.idempotency_key(self.key(key)),
            None => t,
        }
    }
}

/// What one attempt returned.
#[derive(Debug)]
pub struct Outcome {
    /// The thread that made it.
    pub thread: usize,
    /// Its position in the thread's list.
    pub position: usize,
    /// The operation.
    pub op: Op,
    /// The transfer as sent.
    pub transfer: Transfer,
    /// What came back.
    pub result: Result<Receipt, LedgerError>,
    /// How long the call took.
    pub elapsed: Duration,
}

/// Everything a run did: which implementation, how many attempts were planned, and one
/// [`Outcome`] per attempt made.
#[derive(Debug)]
pub struct RunLog {
    /// The implementation that ran the transfers.
    pub control: Control,
    /// Attempts in the workload.
    pub attempts: usize,
    /// One per attempt made, by thread then position.
    pub outcomes: Vec<Outcome>,
    /// Threads that died before finishing their list (a panic in the implementation).
    pub panicked_threads: Vec<usize>,
    /// Wall time from the start barrier to the last thread's end.
    pub elapsed: Duration,
}

/// Runs `workload` on `setup` with `control`: one real thread per workload thread, each making
/// its attempts in order, all released together by a barrier once every thread holds a pooled
/// connection (so the first attempts really race instead of queueing behind connection setup).
/// Every attempt's result is recorded, refusals and errors included.
///
/// The ledger's pool must have at least as many connections as the workload has threads
/// (see [`ledger_for`]); with fewer, warming up waits for the pool's checkout timeout.
pub fn run(ledger: &Ledger, setup: &Setup, workload: &Workload, control: Control) -> RunLog {
    let threads = workload.threads.len();
    let (warm, start) = (Barrier::new(threads), Barrier::new(threads));
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(workload.attempts());
    let mut panicked_threads = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = workload
            .threads
            .iter()
            .enumerate()
            .map(|(thread, ops)| {
                let (warm, start) = (&warm, &start);
                scope.spawn(move || {
                    // Holding a connection at the first barrier makes the pool open one per
                    // thread; released before the start, each attempt then finds one idle.
                    let connection = ledger.connection();
                    warm.wait();
                    drop(connection);
                    start.wait();
                    if control == Control::Batched {
                        return batched(ledger, setup, thread, ops);
                    }
                    ops.iter()
                        .enumerate()
                        .map(|(position, op)| {
                            let transfer = setup.transfer(op);
                            let began = Instant::now();
                            let result = control.transfer(ledger, &transfer);
                            let elapsed = began.elapsed();
                            Outcome { thread, position, op: op.clone(), transfer, result, elapsed }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (thread, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(mut done) => outcomes.append(&mut done),
                Err(_) => panicked_threads.push(thread),
            }
        }
    });
    RunLog { control, attempts: workload.attempts(), outcomes, panicked_threads, elapsed: started.elapsed() }
}

/// Batch sizes [`Control::Batched`] cycles through (a thread's batches have 1 to 5 items).
pub const BATCH_SIZES: std::ops::RangeInclusive<usize> = 1..=5;

/// One thread's operations as `transfer_batch` calls of 1 to 5 items, in order; every item's
/// outcome is recorded with its batch's time. A batch that fails as a whole gives each of its
/// items a `BatchFailed` sharing the error (an unexpected error to the checker).
fn batched(ledger: &Ledger, setup: &Setup, thread: usize, ops: &[Op]) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut position = 0;
    let mut round = 0;
    while position < ops.len() {
        let size = (BATCH_SIZES.start() + (thread + round) % BATCH_SIZES.count()).min(ops.len() - position);
        let chunk = &ops[position..position + size];
        let transfers: Vec<Transfer> = chunk.iter().map(|op| setup.transfer(op)).collect();
        let began = Instant::now();
        let results = ledger.transfer_batch(&transfers);
        let elapsed = began.elapsed();
        let results: Vec<Result<Receipt, LedgerError>> = match results {
            Ok(results) => results,
            Err(e) => {
                let shared = std::sync::Arc::new(e);
                chunk.iter().map(|_| Err(LedgerError::BatchFailed { source: shared.clone() })).collect()
            }
        };
        for ((op, transfer), result) in chunk.iter().zip(transfers).zip(results) {
            outcomes.push(Outcome { thread, position, op: op.clone(), transfer, result, elapsed });
            position += 1;
        }
        round += 1;
    }
    outcomes
}

/// The ledger a run of `control` needs on `url`: [`ledger_for`], with the combiner for
/// [`Control::Combined`] (default settings, batches up to the thread count).
///
/// # Errors
/// As [`LedgerBuilder::build`](crate::LedgerBuilder::build).
pub fn ledger_with(url: &str, threads: usize, control: Control) -> Result<Ledger, LedgerError> {
    if control != Control::Combined {
        return ledger_for(url, threads);
    }
    let size = u32::try_from(threads).unwrap_or(u32::MAX).saturating_add(2);
    let config =
        crate::CombineConfig { max_batch: threads.clamp(1, crate::limits::BATCH_ITEMS_MAX), ..Default::default() };
    Ledger::builder(url).pool_size(size).combine(config).build()
}

/// A ledger on `url` whose pool has a connection for each of `threads` threads, plus two for the
/// checker and the caller.
///
/// # Errors
/// As [`LedgerBuilder::build`](crate::LedgerBuilder::build).
pub fn ledger_for(url: &str, threads: usize) -> Result<Ledger, LedgerError> {
    let size = u32::try_from(threads).unwrap_or(u32::MAX).saturating_add(2);
    Ledger::builder(url).pool_size(size).build()
}

/// A database made for one case and dropped with it, so that hundreds of cases do not fill the
/// disk. Built by [`fresh_database`](wallet_ledger_embedded::fresh_database): on `DATABASE_URL`'s
/// server when it is set (the role needs CREATEDB), else on the process's embedded server.
#[derive(Debug)]
pub struct ScratchDatabase {
    url: String,
    name: Option<String>,
}

impl ScratchDatabase {
    /// A new, empty database; `prefix` makes its name readable.
    ///
    /// # Errors
    /// When no database can be created.
    pub fn new(prefix: &str) -> Result<ScratchDatabase, KitError> {
        let url = embedded::fresh_database(prefix)?;
        let name = postgres::Config::from_str(&url).ok().and_then(|c| c.get_dbname().map(str::to_string));
        Ok(ScratchDatabase { url, name })
    }

    /// Its connection string.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Keeps the database after the value is dropped (to inspect a failing case); returns its URL.
    pub fn keep(mut self) -> String {
        self.name = None;
        std::mem::take(&mut self.url)
    }
}

impl Drop for ScratchDatabase {
    /// Drops the database, ending any session still on it. Best effort: a failure leaves a
    /// database behind, which the embedded server removes with its directory anyway.
    fn drop(&mut self) {
        let Some(name) = &self.name else { return };
        let admin = embedded::with_dbname(&self.url, "postgres");
        if let Ok(mut client) = postgres::Client::connect(&admin, postgres::NoTls) {
            // The name came from fresh_database: [a-z0-9_] only, safe to quote as an identifier.
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
        }
    }
}

/// The server's count of deadlocks in the database behind `url`, once it has settled.
///
/// The ledger retries a deadlock before reporting it, so "no deadlock error" in the outcomes
/// does not prove that none happened; this counter does. Read it before and after a run, with
/// the run's pool closed (statistics reach `pg_stat_database` when a session ends or goes idle,
/// asynchronously): this polls until two reads 150 ms apart agree.
///
/// # Errors
/// When the server cannot be reached.
pub fn server_deadlocks(url: &str) -> Result<i64, KitError> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let mut last = -1;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(150));
        client.batch_execute("SELECT pg_stat_clear_snapshot()")?;
        let now: i64 =
            client.query_one("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()", &[])?.get(0);
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

//! The bank workload: funded wallets, client threads moving money with idempotency keys and
//! retries, readers taking snapshots of every balance; and the log of everything they saw.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postgres::error::SqlState;
use postgres::IsolationLevel;
use wallet_ledger::{AccountId, Decimal, Ledger, LedgerError, NewAccount, Receipt, Transfer};

/// The run's currency (2 decimal places).
pub const CURRENCY: &str = "TRT";
/// What every wallet is funded with, in cents.
pub const FUNDING_CENTS: i64 = 10_000;
/// Every fourth wallet has this credit line (floor), in cents.
pub const CREDIT_LINE_CENTS: i64 = -2_000;
/// Largest transfer, in cents.
const AMOUNT_MAX_CENTS: u64 = 4_000;
/// Attempts of one transfer (same key) before the client gives up on it.
const ATTEMPTS_MAX: u32 = 40;
/// How long after the end of the load a client keeps retrying the transfer it has in flight.
pub const SETTLE: Duration = Duration::from_secs(15);

/// The accounts of one run.
pub struct Setup {
    /// The run's id, part of every key.
    pub run: String,
    /// The wallets, with their floors.
    pub wallets: Vec<(AccountId, Decimal)>,
}

impl Setup {
    /// What the wallets hold together, whatever moved between them.
    pub fn expected_total(&self) -> Decimal {
        Decimal::new(FUNDING_CENTS, 2) * Decimal::from(self.wallets.len())
    }

    /// The key prefix of the run's transfers between wallets.
    pub fn key_prefix(&self) -> String {
        format!("torture-{}-", self.run)
    }
}

/// Defines the currency, opens the issuer and the wallets, funds the wallets.
pub fn setup(ledger: &Ledger, accounts: usize, run: &str) -> Result<Setup> {
    ledger.define_currency(CURRENCY, 2).context("define the currency")?;
    let issuer = ledger.open_account(&NewAccount::new(CURRENCY).name("torture issuer").unbounded())?.id;
    let mut wallets = Vec::with_capacity(accounts);
    for i in 0..accounts {
        let floor = if i % 4 == 3 { Decimal::new(CREDIT_LINE_CENTS, 2) } else { Decimal::ZERO };
        let new = NewAccount::new(CURRENCY).name(format!("torture wallet {i}")).min_balance(floor);
        let id = ledger.open_account(&new)?.id;
        let funding =
            Transfer::new(issuer, id, Decimal::new(FUNDING_CENTS, 2)).idempotency_key(format!("fund-{run}-{i}"));
        ledger.transfer(&funding).context("fund a wallet")?;
        wallets.push((id, floor));
    }
    Ok(Setup { run: run.to_string(), wallets })
}

/// What one attempt (one `Ledger::transfer` call) came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A receipt: the transfer is committed.
    Acknowledged(Receipt),
    /// A rule refused it (funds, key conflict, input): definitively nothing applied.
    Refused(String),
    /// A definitive failure (pool timeout, lock or statement timeout, ...): this attempt applied
    /// nothing. The client retries with the same key.
    Failed(String),
    /// The library could not tell whether it was applied (`OutcomeUnknown`): the key settles it.
    Ambiguous,
}

impl Outcome {
    /// The label used in reports.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Acknowledged(_) => "acknowledged",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
            Outcome::Ambiguous => "ambiguous",
        }
    }
}

/// One attempt, as the client logged it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The transfer's idempotency key (one per logical transfer).
    pub key: String,
    /// Debited wallet.
    pub from: AccountId,
    /// Credited wallet.
    pub to: AccountId,
    /// Amount.
    pub amount: Decimal,
    /// When the attempt ended, since the load started.
    pub at: Duration,
    /// What it came to.
    pub outcome: Outcome,
}

/// Sorts an error into an outcome.
pub fn classify(error: &LedgerError) -> Outcome {
    match error {
        // Combined transfers (the default): a batch whose commit went unanswered names each
        // caller's own key, which settles it like a lone call's; a batch that failed as a whole
        // applied nothing, and its error is the one a lone call would have had.
        LedgerError::OutcomeUnknown { .. } | LedgerError::BatchOutcomeUnknown { .. } => Outcome::Ambiguous,
        LedgerError::BatchFailed { source } => classify(source),
        LedgerError::Pool(_) => Outcome::Failed("pool timeout".into()),
        LedgerError::LockUnavailable { .. } => Outcome::Failed("lock unavailable".into()),
        LedgerError::Database(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => {
            Outcome::Failed("statement timeout".into())
        }
        LedgerError::Database(e) if e.is_closed() || e.as_db_error().is_none() => {
            Outcome::Failed("connection lost".into())
        }
        LedgerError::Database(_) if error.is_retryable() => Outcome::Failed("server unavailable".into()),
        LedgerError::InsufficientFunds { .. } => Outcome::Refused("insufficient funds".into()),
        LedgerError::IdempotencyConflict { .. } => Outcome::Refused("idempotency conflict".into()),
        other => Outcome::Failed(format!("unexpected: {}", error_chain(other))),
    }
}

/// An error with its sources, one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Live counters for the progress bar.
#[derive(Default)]
pub struct Live {
    pub acknowledged: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub ambiguous: AtomicU64,
    pub snapshots: AtomicU64,
}

/// A small xorshift generator: the workload needs no cryptographic randomness, only variety.
pub struct Rng(u64);

impl Rng {
    /// A generator for thread `n` of a run seeded with `seed`.
    pub fn new(seed: u64, n: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(n.wrapping_add(1).wrapping_mul(0x2545_F491_4F6C_DD1D)) | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One client thread: transfers between random wallets until `deadline`, each with its own key,
/// retried with that key until it is acknowledged or refused (bounded), every attempt logged.
#[allow(clippy::too_many_arguments)]
pub fn client(
    ledger: &Ledger,
    setup: &Setup,
    thread: usize,
    seed: u64,
    start: Instant,
    deadline: Instant,
    stop: &AtomicBool,
    live: &Live,
) -> Vec<Attempt> {
    let mut rng = Rng::new(seed, thread as u64);
    let mut log = Vec::new();
    let n = setup.wallets.len() as u64;
    let mut op = 0u64;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        op += 1;
        let i = rng.below(n);
        let j = (i + 1 + rng.below(n - 1)) % n;
        let (from, to) = (setup.wallets[i as usize].0, setup.wallets[j as usize].0);
        let amount = Decimal::new(1 + rng.below(AMOUNT_MAX_CENTS) as i64, 2);
        let key = format!("{}{thread}-{op}", setup.key_prefix());
        let transfer = Transfer::new(from, to, amount).idempotency_key(key.clone());
        let mut backoff = Duration::from_millis(5);
        for attempt in 1..=ATTEMPTS_MAX {
            let result = ledger.transfer(&transfer);
            let outcome = match result {
                Ok(receipt) => Outcome::Acknowledged(receipt),
                Err(e) => classify(&e),
            };
            let counter = match &outcome {
                Outcome::Acknowledged(_) => &live.acknowledged,
                Outcome::Refused(_) => &live.refused,
                Outcome::Failed(_) => &live.failed,
                Outcome::Ambiguous => &live.ambiguous,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let settled = matches!(outcome, Outcome::Acknowledged(_) | Outcome::Refused(_));
            log.push(Attempt { key: key.clone(), from, to, amount, at: start.elapsed(), outcome });
            if settled || attempt == ATTEMPTS_MAX || Instant::now() > deadline + SETTLE {
                break;
            }
            std::thread::sleep(backoff / 2 + Duration::from_millis(rng.below(backoff.as_millis() as u64 / 2 + 1)));
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
    log
}

/// What one snapshot read found.
#[derive(Debug, Clone)]
pub enum Snapshot {
    /// The wallets summed to the expected total and none was below its floor.
    Good,
    /// A wrong total or a broken floor.
    Bad(String),
    /// The read failed (a fault hit it): no evidence either way.
    Failed,
}

/// The snapshot statement: the wallets' total and how many are below their floor, in one
/// statement of a `REPEATABLE READ READ ONLY` transaction (one snapshot).
const SNAPSHOT_SQL: &str = "SELECT coalesce(sum(balance), 0), \
     count(*) FILTER (WHERE min_balance IS NOT NULL AND balance - held < min_balance), count(*) \
     FROM wallet_ledger.accounts WHERE id = ANY($1)";

/// One reader thread: snapshots until `deadline`.
pub fn reader(ledger: &Ledger, setup: &Setup, deadline: Instant, stop: &AtomicBool, live: &Live) -> Vec<Snapshot> {
    let ids: Vec<i64> = setup.wallets.iter().map(|w| w.0 .0).collect();
    let expected = setup.expected_total();
    let mut out = Vec::new();
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let result = (|| -> Result<(Decimal, i64, i64)> {
            let mut conn = ledger.connection()?;
            let mut tx = conn
                .client()
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let row = tx.query_one(SNAPSHOT_SQL, &[&ids])?;
            tx.commit()?;
            Ok((row.get(0), row.get(1), row.get(2)))
        })();
        out.push(match result {
            Ok((total, below, count)) if total == expected && below == 0 && count == ids.len() as i64 => Snapshot::Good,
            Ok((total, below, count)) => Snapshot::Bad(format!(
                "wallets sum to {total} (expected {expected}), {below} below their floor, {count} of {} seen",
                ids.len()
            )),
            Err(_) => Snapshot::Failed,
        });
        live.snapshots.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

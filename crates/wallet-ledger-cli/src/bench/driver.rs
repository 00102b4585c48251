//! Client threads sending transfers for a fixed time, through the library or a control.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wallet_ledger::testkit::controls::{is_deadlock, Control};
use wallet_ledger::{aio, AccountId, Decimal, Hold, Ledger, LedgerError, Posting, Receipt, Transfer};

use super::alternatives::{self, Strategy};

use super::hist::Histogram;
use super::progress::Progress;

/// Amount of every bench transfer: 1.00.
pub const AMOUNT: Decimal = Decimal::from_parts(100, 0, 0, false, 2);

/// A tiny, seedable PRNG (splitmix64): the bench needs fast, reproducible account pairs, not
/// cryptographic quality.
#[derive(Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator for client `client` of a run seeded with `seed`.
    pub fn new(seed: u64, client: u64) -> SplitMix {
        SplitMix(seed ^ client.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Distinct random pairs among the wallets `first .. first + pool`; in a pool of two, a random
/// direction. The pgbench script draws pairs the same way.
#[derive(Debug, Clone, Copy)]
pub struct Pairs {
    /// The lowest wallet id.
    pub first: i64,
    /// How many wallets to draw from (at least 2).
    pub pool: usize,
}

impl Pairs {
    /// The next `(from, to)`.
    pub fn draw(&self, rng: &mut SplitMix) -> (AccountId, AccountId) {
        let n = self.pool as u64;
        let a = rng.below(n);
        let b = rng.below(n - 1);
        let b = if b >= a { b + 1 } else { b };
        (AccountId(self.first + a as i64), AccountId(self.first + b as i64))
    }
}

/// How the transfers are sent.
#[derive(Debug, Clone, Copy)]
pub enum Sender {
    /// `Ledger::transfer`.
    Library,
    /// `Ledger::hold` of the transfer's amount between its accounts, then `Ledger::capture` of
    /// all of it: one operation, two transactions.
    HoldCapture,
    /// A testkit control.
    Control(Control),
    /// `Ledger::transfer_batch` of this many random transfers per call.
    Batch(usize),
    /// `Ledger::post` of a 3-leg posting among three distinct random accounts: -2.00, +1.00, +1.00.
    Posting3,
    /// An alternative strategy (see `alternatives`).
    Alternative(Strategy),
}

impl Sender {
    fn send(self, ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
        match self {
            Sender::Library => ledger.transfer(t),
            Sender::HoldCapture => {
                let hold = ledger.hold(&Hold::new(t.from, t.to, t.amount))?;
                ledger.capture(hold.hold_id, None)
            }
            Sender::Control(c) => c.transfer(ledger, t),
            Sender::Batch(_) | Sender::Posting3 | Sender::Alternative(_) => {
                unreachable!("sent by step, not one transfer at a time")
            }
        }
    }

    /// One call: draws its accounts, sends, and counts every outcome in `load`.
    fn step(self, ledger: &Ledger, pairs: Pairs, rng: &mut SplitMix, load: &mut Load) {
        match self {
            Sender::Batch(n) => {
                let items: Vec<Transfer> = (0..n)
                    .map(|_| {
                        let (from, to) = pairs.draw(rng);
                        Transfer::new(from, to, AMOUNT)
                    })
                    .collect();
                match ledger.transfer_batch(&items) {
                    Ok(results) => results.into_iter().for_each(|r| load.count(r)),
                    Err(e) => load.count::<()>(Err(e)),
                }
            }
            Sender::Posting3 => {
                let (a, b) = pairs.draw(rng);
                let c = loop {
                    let (c, _) = pairs.draw(rng);
                    if c != a && c != b {
                        break c;
                    }
                };
                let posting = Posting::new().leg(a, -(AMOUNT + AMOUNT)).leg(b, AMOUNT).leg(c, AMOUNT);
                load.count(ledger.post(&posting));
            }
            Sender::Alternative(strategy) => {
                let (from, to) = pairs.draw(rng);
                let (result, retries) = alternatives::transfer(ledger, strategy, from, to, AMOUNT);
                load.retries += retries;
                load.count(result);
            }
            _ => {
                let (from, to) = pairs.draw(rng);
                load.count(self.send(ledger, &Transfer::new(from, to, AMOUNT)));
            }
        }
    }

    /// Whether the library sends (it retries internally; the controls never do).
    pub fn is_library(self) -> bool {
        matches!(self, Sender::Library | Sender::HoldCapture | Sender::Batch(_) | Sender::Posting3)
    }
}

/// What the client threads saw.
#[derive(Default)]
pub struct Load {
    /// Committed transfers (hold-capture: committed captures, one per hold+capture pair).
    pub ok: u64,
    /// Typed refusals (insufficient funds and the like): nothing changed.
    pub refusals: u64,
    /// Other errors (deadlocks included).
    pub errors: u64,
    /// Errors that were deadlocks (SQLSTATE 40P01).
    pub deadlock_errors: u64,
    /// Attempts an alternative strategy repeated (its aborts and conflicts).
    pub retries: u64,
    /// Latency of every call, refused or failed ones included.
    pub latency: Histogram,
    /// Measured time, from the start signal until the last thread stopped.
    pub elapsed: Duration,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

impl Load {
    fn merge(&mut self, other: Load) {
        self.ok += other.ok;
        self.refusals += other.refusals;
        self.errors += other.errors;
        self.deadlock_errors += other.deadlock_errors;
        self.retries += other.retries;
        self.latency.merge(&other.latency);
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn count<T>(&mut self, result: Result<T, LedgerError>) {
        match result {
            Ok(_) => self.ok += 1,
            Err(e) if is_refusal(&e) => self.refusals += 1,
            Err(e) => {
                self.errors += 1;
                if is_deadlock(&e) {
                    self.deadlock_errors += 1;
                }
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{:#}", anyhow::Error::new(e)));
                }
            }
        }
    }
}

/// A refusal: the ledger said no and changed nothing.
fn is_refusal(e: &LedgerError) -> bool {
    matches!(
        e,
        LedgerError::InsufficientFunds { .. }
            | LedgerError::AccountNotFound { .. }
            | LedgerError::SameAccount { .. }
            | LedgerError::InvalidAmount { .. }
            | LedgerError::CurrencyMismatch { .. }
            | LedgerError::IdempotencyConflict { .. }
            | LedgerError::LockUnavailable { .. }
    )
}

/// One client run: `threads` threads, each first sending one unmeasured transfer (to open its
/// connection and prepare its statement), then sending transfers until `duration` is over.
pub fn drive(
    ledger: &Ledger,
    sender: Sender,
    pairs: Pairs,
    threads: usize,
    duration: Duration,
    seed: u64,
    progress: &Progress,
) -> Load {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    // Warm-ups run one at a time, so that they cannot race (a control could deadlock or lose
    // money outside the measured window, and the server counts that too).
    let warm_up = Mutex::new(());
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|client| {
                let (stop, barrier, warm_up) = (&stop, &barrier, &warm_up);
                scope.spawn(move || {
                    let mut rng = SplitMix::new(seed, client as u64);
                    let turn = warm_up.lock().unwrap_or_else(|e| e.into_inner());
                    sender.step(ledger, pairs, &mut rng, &mut Load::default());
                    drop(turn);
                    barrier.wait();
                    client_loop(ledger, sender, pairs, &mut rng, stop)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        measure_for(start, duration, progress);
        stop.store(true, Ordering::Relaxed);
        let mut total = Load::default();
        for w in workers {
            total.merge(w.join().expect("bench client thread panicked"));
        }
        total.elapsed = start.elapsed();
        total
    })
}

/// Several ledgers measured in alternating slices of one run: `threads` threads, each first
/// sending one unmeasured transfer through every ledger (to open its connection and prepare its
/// statements), then, slice after slice, sending through the ledger of that slice until the
/// slice is over. `order` lists which ledger (an index into `ledgers`) each slice uses; every
/// thread finishes its call and waits for the others before the next slice starts, so no two
/// slices overlap. Each ledger's `Load` counts its slices: their calls, and as time the sum of
/// its slices (each from its start until its last call returned, as in [`drive`]).
pub fn drive_interleaved(
    ledgers: &[&Ledger],
    sender: Sender,
    pairs: Pairs,
    threads: usize,
    (slice, order): (Duration, &[usize]),
    seed: u64,
    progress: &Progress,
) -> Vec<Load> {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let warm_up = Mutex::new(());
    let fresh = || (0..ledgers.len()).map(|_| Load::default()).collect::<Vec<_>>();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|client| {
                let (stop, barrier, warm_up) = (&stop, &barrier, &warm_up);
                scope.spawn(move || {
                    let mut rng = SplitMix::new(seed, client as u64);
                    let turn = warm_up.lock().unwrap_or_else(|e| e.into_inner());
                    for ledger in ledgers {
                        sender.step(ledger, pairs, &mut rng, &mut Load::default());
                    }
                    drop(turn);
                    let mut loads = fresh();
                    for &which in order {
                        barrier.wait();
                        let load = client_loop(ledgers[which], sender, pairs, &mut rng, stop);
                        loads[which].merge(load);
                        barrier.wait();
                    }
                    loads
                })
            })
            .collect();
        let mut totals = fresh();
        for (n, &which) in order.iter().enumerate() {
            stop.store(false, Ordering::Relaxed);
            barrier.wait();
            let start = Instant::now();
            let before = slice * n as u32;
            while start.elapsed() < slice {
                thread::sleep((slice - start.elapsed().min(slice)).min(Duration::from_millis(100)));
                // The bar counts one point's time over all the points' slices.
                progress.tick((before + start.elapsed().min(slice)) / ledgers.len() as u32);
            }
            stop.store(true, Ordering::Relaxed);
            barrier.wait();
            totals[which].elapsed += start.elapsed();
        }
        for w in workers {
            let loads = w.join().expect("bench client thread panicked");
            for (total, load) in totals.iter_mut().zip(loads) {
                total.merge(load);
            }
        }
        totals
    })
}

/// One client run through the async door: `tasks` tokio tasks on `runtime`, each first sending
/// one unmeasured transfer (one task at a time, as `drive` warms up), then sending transfers
/// until `duration` is over. Every call is an `aio::Ledger::transfer`.
pub fn drive_async(
    runtime: &tokio::runtime::Runtime,
    ledger: &aio::Ledger,
    pairs: Pairs,
    tasks: usize,
    duration: Duration,
    seed: u64,
    progress: &Progress,
) -> Load {
    let mut rngs: Vec<SplitMix> = (0..tasks).map(|client| SplitMix::new(seed, client as u64)).collect();
    runtime.block_on(async {
        for rng in &mut rngs {
            let (from, to) = pairs.draw(rng);
            let _ = ledger.transfer(&Transfer::new(from, to, AMOUNT)).await;
        }
    });
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = rngs
        .into_iter()
        .map(|mut rng| {
            let (ledger, stop) = (ledger.clone(), std::sync::Arc::clone(&stop));
            runtime.spawn(async move {
                let mut load = Load::default();
                while !stop.load(Ordering::Relaxed) {
                    let (from, to) = pairs.draw(&mut rng);
                    let call = Instant::now();
                    load.count(ledger.transfer(&Transfer::new(from, to, AMOUNT)).await);
                    load.latency.record(call.elapsed());
                }
                load
            })
        })
        .collect();
    measure_for(start, duration, progress);
    stop.store(true, Ordering::Relaxed);
    let mut total = Load::default();
    for w in workers {
        total.merge(runtime.block_on(w).expect("bench client task panicked"));
    }
    total.elapsed = start.elapsed();
    total
}

/// Waits until `duration` has passed since `start`, ticking the progress bar.
fn measure_for(start: Instant, duration: Duration, progress: &Progress) {
    while start.elapsed() < duration {
        thread::sleep((duration - start.elapsed().min(duration)).min(Duration::from_millis(100)));
        progress.tick(start.elapsed());
    }
}

fn client_loop(ledger: &Ledger, sender: Sender, pairs: Pairs, rng: &mut SplitMix, stop: &AtomicBool) -> Load {
    let mut load = Load::default();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        sender.step(ledger, pairs, rng, &mut load);
        load.latency.record(start.elapsed());
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_distinct_and_in_range() {
        let mut rng = SplitMix::new(7, 3);
        for pool in [2, 10, 10_000] {
            let pairs = Pairs { first: 5, pool };
            for _ in 0..1000 {
                let (a, b) = pairs.draw(&mut rng);
                assert_ne!(a, b);
                assert!((5..5 + pool as i64).contains(&a.0) && (5..5 + pool as i64).contains(&b.0));
            }
        }
    }

    #[test]
    fn amount_is_one() {
        assert_eq!(AMOUNT.to_string(), "1.00");
    }
}

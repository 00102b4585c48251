//! criterion benches: the three workloads of `wallet-ledger bench` (uniform over 10,000
//! accounts, hot over 10, pair over 2) at a few thread counts, in transfers per second
//! (`Throughput::Elements`, one element per transfer), plus the latency of one transfer at one
//! thread. Regressions show in criterion's reports (`target/criterion`); `wallet-ledger bench`
//! is the report with pgbench beside it.
//!
//! The database: a fresh one on the embedded server (or `DATABASE_URL`), with wallets opened
//! through the library and funded by the library's own transfer function, once for all benches.

use std::sync::{Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wallet_ledger::{AccountId, Decimal, Ledger, NewAccount, Transfer};
use wallet_ledger_embedded::embedded;

/// Wallets of the uniform workload.
const ACCOUNTS: usize = 10_000;
/// Thread counts measured for each workload.
const THREADS: [usize; 3] = [1, 4, 16];
/// 1.00 per transfer.
const AMOUNT: Decimal = Decimal::from_parts(100, 0, 0, false, 2);

/// The shared ledger and its wallets (`first .. first + ACCOUNTS`).
struct Fixture {
    ledger: Ledger,
    first: i64,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| setup().unwrap_or_else(|e| panic!("bench setup failed: {e}")))
}

fn setup() -> Result<Fixture, Box<dyn std::error::Error>> {
    let url = embedded::fresh_database("bench_contention")?;
    let max_threads = THREADS.iter().copied().max().unwrap_or(1) as u32;
    let ledger = Ledger::builder(&url).pool_size(max_threads).build()?;
    ledger.define_currency("USD", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("USD").name("issuer").unbounded())?.id;
    thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let ledger = &ledger;
                s.spawn(move || {
                    for i in (w..ACCOUNTS).step_by(4) {
                        ledger.open_account(&NewAccount::new("USD").name(format!("w{i}"))).map(|_| ())?;
                    }
                    Ok::<(), wallet_ledger::LedgerError>(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().expect("setup thread panicked"))
    })?;
    let mut conn = ledger.connection()?;
    // One server-side statement calling the library's own transfer function per wallet.
    let row = conn.client().query_one(
        "SELECT min(a.id), count(*) FILTER (WHERE t.outcome = 'ok') FROM wallet_ledger.accounts a
           CROSS JOIN LATERAL wallet_ledger.transfer($1, a.id, 1000000.00, 'bench-setup-' || a.id, NULL, 0::smallint, 0) t
          WHERE a.min_balance IS NOT NULL",
        &[&issuer.0],
    )?;
    let (first, funded): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(funded as usize, ACCOUNTS, "every wallet funded");
    drop(conn);
    Ok(Fixture { ledger, first })
}

/// splitmix64: fast, seedable random pairs.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) as u128 * n as u128) >> 64) as u64
    }

    /// Two distinct wallets among the first `pool`.
    fn transfer(&mut self, first: i64, pool: usize) -> Transfer {
        let a = self.below(pool as u64);
        let b = self.below(pool as u64 - 1);
        let b = if b >= a { b + 1 } else { b };
        Transfer::new(AccountId(first + a as i64), AccountId(first + b as i64), AMOUNT)
    }
}

/// `iters` transfers over `threads` threads; the time from a common start to the last one done.
fn run_threads(f: &Fixture, pool: usize, threads: usize, iters: u64, seed: u64) -> Duration {
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        for t in 0..threads {
            let share = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
            let barrier = &barrier;
            s.spawn(move || {
                let mut rng = Rng(seed ^ (t as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
                barrier.wait();
                for _ in 0..share {
                    f.ledger.transfer(&rng.transfer(f.first, pool)).expect("transfer");
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every thread before returning.
        start
    })
    .elapsed()
}

fn workloads(c: &mut Criterion) {
    let f = fixture();
    let mut seed = 1;
    for (name, pool) in [("uniform", ACCOUNTS), ("hot", 10), ("pair", 2)] {
        let mut group = c.benchmark_group(format!("transfers/{name}"));
        group.throughput(Throughput::Elements(1));
        for threads in THREADS {
            group.bench_with_input(BenchmarkId::from_parameter(format!("{threads}_threads")), &threads, |b, &t| {
                b.iter_custom(|iters| {
                    seed += 1;
                    run_threads(f, pool, t, iters, seed)
                })
            });
        }
        group.finish();
    }
}

fn single_transfer(c: &mut Criterion) {
    let f = fixture();
    let mut rng = Rng(7);
    let mut group = c.benchmark_group("latency");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_transfer_uniform_1_thread", |b| {
        b.iter(|| f.ledger.transfer(&rng.transfer(f.first, ACCOUNTS)).expect("transfer"))
    });
    group.finish();
}

criterion_group! {
    name = contention;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = single_transfer, workloads
}
criterion_main!(contention);

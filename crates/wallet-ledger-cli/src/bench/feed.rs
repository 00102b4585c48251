//! The feed section: a durable consumer draining the change feed while the library's transfers
//! run, its delivery latency (from a change's time under its locks to the handler seeing it),
//! the most changes it fell behind, and how long it took to catch up once the load stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use wallet_ledger::Ledger;

use super::hist::Histogram;

/// The consumer's name in the bench's databases.
pub const CONSUMER: &str = "bench";

/// Changes per `consume` call.
pub const PAGE: u32 = 1_000;

/// How often the lag is sampled while the load runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Longest wait for the consumer to catch up after the load.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// What the consumer saw.
#[derive(Default)]
pub struct FeedRun {
    /// Changes processed while the load ran and while it caught up.
    pub delivered: u64,
    /// Delivery latency of each change.
    pub latency: Histogram,
    /// Most committed changes behind, over the samples.
    pub max_lag: u64,
    /// Time from the end of the load until the consumer had nothing left.
    pub drain: Duration,
}

/// Brings the consumer up to the present before the load starts (the template's accounts and
/// fundings), untimed.
pub fn catch_up(url: &str) -> Result<()> {
    let ledger = consumer_ledger(url)?;
    while ledger.consume(CONSUMER, PAGE, |_, _| Ok(()))? > 0 {}
    Ok(())
}

fn consumer_ledger(url: &str) -> Result<Ledger> {
    Ledger::builder(url).pool_size(2).migrate(false).build().context("connect the feed consumer")
}

/// Runs `load` while a consumer drains the feed of `url`, then lets it catch up.
pub fn beside<T>(url: &str, load: impl FnOnce() -> T) -> Result<(T, FeedRun)> {
    let ledger = consumer_ledger(url)?;
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let consumer = s.spawn(|| consume(&ledger, &stop));
        let sampler = s.spawn(|| sample(&ledger, &stop));
        let result = load();
        stop.store(true, Ordering::SeqCst);
        let mut run = consumer.join().map_err(|_| anyhow::anyhow!("the feed consumer panicked"))??;
        run.max_lag = sampler.join().map_err(|_| anyhow::anyhow!("the lag sampler panicked"))??;
        Ok((result, run))
    })
}

fn consume(ledger: &Ledger, stop: &AtomicBool) -> Result<FeedRun> {
    let mut run = FeedRun::default();
    let mut stopped_at: Option<Instant> = None;
    loop {
        let n = ledger.consume(CONSUMER, PAGE, |_, changes| {
            let now = SystemTime::now();
            for c in changes {
                run.latency.record(now.duration_since(c.at).unwrap_or_default());
            }
            Ok(())
        })?;
        run.delivered += n as u64;
        if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
            stopped_at = Some(Instant::now());
        }
        if let Some(at) = stopped_at {
            if n == 0 && ledger.consumer_lag(CONSUMER)?.changes == 0 {
                run.drain = at.elapsed();
                return Ok(run);
            }
            anyhow::ensure!(at.elapsed() < DRAIN_LIMIT, "the feed consumer did not catch up in {DRAIN_LIMIT:?}");
        }
        if n == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn sample(ledger: &Ledger, stop: &AtomicBool) -> Result<u64> {
    let mut most = 0;
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(SAMPLE_EVERY);
        most = most.max(ledger.consumer_lag(CONSUMER)?.changes);
    }
    Ok(most)
}

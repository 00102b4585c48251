//! `bench --citus`: the library on a Citus cluster (the embedded coordinator and two workers on
//! this machine, or `DATABASE_URL_CITUS`), beside the single server of the same run.
//!
//! One schema on the cluster holds `--accounts` funded wallets. Each point runs the library's
//! transfers for the point's duration and records transfers/s, latency, the share of committed
//! transfers whose two accounts sit on different workers (two-phase commit), the workers' deadlock
//! counters, and the audit. Besides `uniform`, `hot` and `pair`, two Citus-only workloads split
//! the cost: `same-worker` (random pairs of accounts on one worker: one-phase commit on one node)
//! and `cross-worker` (every pair on two workers: two-phase commit). On the embedded cluster the
//! CPU time of each node's processes is read from /proc before and after each point, which gives
//! CPU milliseconds per transfer on the coordinator and on the workers: the measured inputs of
//! the projection in docs/citus.md.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use wallet_ledger::{AccountId, Decimal, Ledger, LedgerError, NewAccount, Transfer};
use wallet_ledger_embedded::embedded_citus::CitusCluster;

use super::driver::{SplitMix, AMOUNT};
use super::hist::Histogram;
use super::plan::{Settings, Workload, HOT_ACCOUNTS};
use super::progress::Progress;
use super::InvariantBroken;

/// One measured point on the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct CitusRun {
    /// `uniform`, `hot`, `pair`, `same-worker` or `cross-worker`.
    pub workload: &'static str,
    /// Client threads.
    pub threads: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Committed transfers.
    pub transfers: u64,
    /// Committed transfers per second on the cluster.
    pub tps: f64,
    /// The single server's `library` tps at the same workload and threads in this run, if measured.
    pub single_server_tps: Option<f64>,
    /// `tps / single_server_tps`.
    pub ratio_single_server: Option<f64>,
    /// Share of committed transfers whose accounts are on two workers (two-phase commit).
    pub cross_worker_share: f64,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
    /// Typed refusals.
    pub refusals: u64,
    /// Other errors.
    pub errors: u64,
    /// Deadlocks counted by the workers' servers during the point.
    pub deadlocks: i64,
    /// The audit after the point.
    pub audit_clean: bool,
    /// Coordinator CPU milliseconds per committed transfer (embedded cluster only).
    pub coordinator_cpu_ms: Option<f64>,
    /// Workers' CPU milliseconds per committed transfer, summed over the workers (embedded only).
    pub workers_cpu_ms: Option<f64>,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// The Citus-only workloads, after the shared ones.
const SPLIT: [&str; 2] = ["same-worker", "cross-worker"];

/// The cluster and the prepared schema.
struct Cluster {
    embedded: Option<CitusCluster>,
    url: String,
    schema: String,
    /// Wallets in id order, and the worker of each.
    wallets: Vec<(AccountId, String)>,
}

/// Runs the Citus section: every workload of `settings` plus the two split workloads, at every
/// thread count. `single` gives the single server's library tps by (workload, threads).
pub fn run(
    settings: &Settings,
    single: &BTreeMap<(&'static str, usize), f64>,
    progress: &Progress,
) -> Result<(String, Vec<CitusRun>)> {
    let cluster = prepare(settings, progress)?;
    let describe = match &cluster.embedded {
        Some(c) => format!(
            "embedded Citus: coordinator + {} workers on this machine ({})",
            c.workers().len(),
            c.coordinator().dir().display()
        ),
        None => "the Citus coordinator at DATABASE_URL_CITUS".to_string(),
    };
    let mut runs = Vec::new();
    let workloads: Vec<&'static str> = settings.workloads.iter().map(|w| w.name()).chain(SPLIT).collect();
    for workload in workloads {
        for &threads in &settings.threads {
            progress.set_message(format!("citus {workload} {threads} threads"));
            let mut run =
                point(&cluster, settings, workload, threads).with_context(|| format!("citus {workload} {threads}"))?;
            run.single_server_tps = single.get(&(workload, threads)).copied();
            run.ratio_single_server = run.single_server_tps.filter(|t| *t > 0.0).map(|t| run.tps / t);
            progress.log(&format!(
                "citus {workload} {threads} threads: {:.0} transfers/s, {:.0}% across workers, p99 {:.2} ms, {} errors, audit {}",
                run.tps,
                run.cross_worker_share * 100.0,
                run.p99_ms.unwrap_or(0.0),
                run.errors,
                if run.audit_clean { "clean" } else { "NOT CLEAN" }
            ));
            if !run.audit_clean {
                let broken = format!("AUDIT FAILED on Citus after {workload} at {threads} threads");
                return Err(InvariantBroken(broken).into());
            }
            runs.push(run);
        }
    }
    // The embedded cluster stops when `cluster` drops here.
    Ok((describe, runs))
}

fn prepare(settings: &Settings, progress: &Progress) -> Result<Cluster> {
    progress.set_message("starting the Citus cluster".to_string());
    let started = Instant::now();
    let (embedded, url) = match std::env::var("DATABASE_URL_CITUS").ok().filter(|u| !u.is_empty()) {
        Some(url) => (None, url),
        None => {
            let cluster = CitusCluster::start(2).context("start the embedded Citus cluster")?;
            let url = cluster.create_database("wlb_citus").context("create the Citus database")?;
            (Some(cluster), url)
        }
    };
    let schema = format!("wlb_citus_{}", std::process::id());
    let ledger = Ledger::builder(&url).schema(&schema).pool_size(8).citus(true).build().context("migrate on Citus")?;
    ledger.define_currency("USD", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("USD").name("issuer").unbounded())?.id;
    let count = settings.accounts;
    let funding = Decimal::new(100_000_000, 2);
    thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let ledger = &ledger;
                scope.spawn(move || -> Result<Vec<AccountId>> {
                    let mut ids = Vec::new();
                    for i in (w..count).step_by(4) {
                        ids.push(ledger.open_account(&NewAccount::new("USD").name(format!("w{i}")))?.id);
                    }
                    for id in &ids {
                        ledger.transfer(&Transfer::new(issuer, *id, funding))?;
                    }
                    Ok(ids)
                })
            })
            .collect();
        for w in workers {
            w.join().expect("setup thread panicked")?;
        }
        Ok(())
    })?;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let table = format!("\"{schema}\".accounts");
    let rows = client.query(
        &format!(
            "SELECT a.id, p.nodename || ':' || p.nodeport FROM \"{schema}\".accounts a
               JOIN pg_dist_shard_placement p
                 ON p.shardid = get_shard_id_for_distribution_column($1::text::regclass, a.id)
              WHERE a.min_balance IS NOT NULL ORDER BY a.id"
        ),
        &[&table],
    );
    // Older Citus versions refuse the function inside a distributed query: ask per account.
    let wallets: Vec<(AccountId, String)> = match rows {
        Ok(rows) => rows.iter().map(|r| (AccountId(r.get(0)), r.get(1))).collect(),
        Err(_) => {
            let ids: Vec<i64> = client
                .query(&format!("SELECT id FROM \"{schema}\".accounts WHERE min_balance IS NOT NULL ORDER BY id"), &[])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row = client.query_one(
                    "SELECT p.nodename || ':' || p.nodeport FROM pg_dist_shard_placement p
                      WHERE p.shardid = get_shard_id_for_distribution_column($1::text::regclass, $2::bigint)",
                    &[&table, &id],
                )?;
                out.push((AccountId(id), row.get(0)));
            }
            out
        }
    };
    ensure!(wallets.len() == count, "opened {} of {count} wallets on Citus", wallets.len());
    let audit = ledger.verify()?;
    ensure!(audit.is_clean(), "the Citus ledger is not clean after setup: {:?}", audit.violations.first());
    progress
        .log(&format!("Citus cluster with {count} funded wallets ready in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(Cluster { embedded, url, schema, wallets })
}

/// How a point draws its pairs.
enum Draw {
    /// Random distinct pairs among the first `pool` wallets.
    Pool(usize),
    /// Random pairs within one worker's wallets (the worker drawn first).
    SameWorker(Vec<Vec<AccountId>>),
    /// Random pairs with one account on each of two workers, in a random direction.
    CrossWorker(Vec<Vec<AccountId>>),
}

impl Draw {
    fn next(&self, wallets: &[(AccountId, String)], rng: &mut SplitMix) -> (AccountId, AccountId) {
        match self {
            Draw::Pool(pool) => {
                let n = *pool as u64;
                let a = rng.below(n);
                let b = rng.below(n - 1);
                let b = if b >= a { b + 1 } else { b };
                (wallets[a as usize].0, wallets[b as usize].0)
            }
            Draw::SameWorker(groups) => {
                let g = &groups[rng.below(groups.len() as u64) as usize];
                let a = rng.below(g.len() as u64);
                let b = rng.below(g.len() as u64 - 1);
                let b = if b >= a { b + 1 } else { b };
                (g[a as usize], g[b as usize])
            }
            Draw::CrossWorker(groups) => {
                let first = rng.below(2) as usize;
                let (g, h) = (&groups[first], &groups[1 - first]);
                (g[rng.below(g.len() as u64) as usize], h[rng.below(h.len() as u64) as usize])
            }
        }
    }
}

fn point(cluster: &Cluster, settings: &Settings, workload: &'static str, threads: usize) -> Result<CitusRun> {
    let mut groups: BTreeMap<&str, Vec<AccountId>> = BTreeMap::new();
    for (id, worker) in &cluster.wallets {
        groups.entry(worker).or_default().push(*id);
    }
    let groups: Vec<Vec<AccountId>> = groups.into_values().filter(|g| g.len() >= 2).collect();
    let draw = match workload {
        "same-worker" => Draw::SameWorker(groups),
        "cross-worker" => {
            ensure!(groups.len() >= 2, "the wallets are not on two workers");
            Draw::CrossWorker(groups)
        }
        "hot" => Draw::Pool(Workload::Hot.pool(cluster.wallets.len()).min(HOT_ACCOUNTS)),
        "pair" => Draw::Pool(2),
        _ => Draw::Pool(cluster.wallets.len()),
    };
    let ledger = Ledger::builder(&cluster.url)
        .schema(&cluster.schema)
        .pool_size(threads as u32)
        .citus(true)
        .migrate(false)
        .build()?;
    let held = (0..threads).map(|_| ledger.connection()).collect::<Result<Vec<_>, _>>()?;
    drop(held);
    let mut admin = postgres::Client::connect(&cluster.url, postgres::NoTls)?;
    let watermark: i64 =
        admin.query_one(&format!("SELECT coalesce(max(id), 0) FROM \"{}\".transfers", cluster.schema), &[])?.get(0);
    let deadlocks_before = worker_deadlocks(&mut admin)?;
    let cpu_before = cluster.embedded.as_ref().map(cpu_by_node);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let duration = Duration::from_secs(settings.duration_s);
    let (mut latency, mut refusals, mut errors, mut first_error) = (Histogram::default(), 0, 0, None);
    let elapsed = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|client| {
                let (ledger, draw, stop, barrier, wallets) = (&ledger, &draw, &stop, &barrier, &cluster.wallets);
                scope.spawn(move || {
                    let mut rng = SplitMix::new(settings.seed, client as u64);
                    let (mut h, mut refused, mut failed, mut first) = (Histogram::default(), 0u64, 0u64, None);
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let (from, to) = draw.next(wallets, &mut rng);
                        let began = Instant::now();
                        let result = ledger.transfer(&Transfer::new(from, to, AMOUNT));
                        h.record(began.elapsed());
                        match result {
                            Ok(_) => {}
                            Err(LedgerError::InsufficientFunds { .. }) => refused += 1,
                            Err(e) => {
                                failed += 1;
                                first.get_or_insert_with(|| format!("{:#}", anyhow::Error::new(e)));
                            }
                        }
                    }
                    (h, refused, failed, first)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let (h, r, f, first) = h.join().expect("bench client panicked");
            latency.merge(&h);
            refusals += r;
            errors += f;
            first_error = first_error.take().or(first);
        }
        start.elapsed()
    });
    drop(ledger);
    settle(&mut admin)?;
    let placement: BTreeMap<i64, &str> = cluster.wallets.iter().map(|(id, w)| (id.0, w.as_str())).collect();
    let rows = admin.query(
        &format!("SELECT from_account, to_account FROM \"{}\".transfers WHERE id > $1", cluster.schema),
        &[&watermark],
    )?;
    let transfers = rows.len() as u64;
    let cross =
        rows.iter().filter(|r| placement.get(&r.get::<_, i64>(0)) != placement.get(&r.get::<_, i64>(1))).count();
    let cpu_after = cluster.embedded.as_ref().map(cpu_by_node);
    let per_transfer = |before: f64, after: f64| (transfers > 0).then(|| (after - before) * 1000.0 / transfers as f64);
    let (coordinator_cpu_ms, workers_cpu_ms) = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => (per_transfer(b.0, a.0), per_transfer(b.1, a.1)),
        _ => (None, None),
    };
    let deadlocks = worker_deadlocks(&mut admin)? - deadlocks_before;
    let audit = Ledger::builder(&cluster.url)
        .schema(&cluster.schema)
        .pool_size(1)
        .citus(true)
        .migrate(false)
        .build()?
        .verify()?;
    let secs = elapsed.as_secs_f64();
    Ok(CitusRun {
        workload,
        threads,
        duration_s: secs,
        transfers,
        tps: transfers as f64 / secs,
        single_server_tps: None,
        ratio_single_server: None,
        cross_worker_share: if transfers > 0 { cross as f64 / transfers as f64 } else { 0.0 },
        p50_ms: latency.quantile_ms(0.50),
        p99_ms: latency.quantile_ms(0.99),
        refusals,
        errors,
        deadlocks,
        audit_clean: audit.is_clean(),
        coordinator_cpu_ms,
        workers_cpu_ms,
        first_error: first_error.or_else(|| audit.violations.first().map(ToString::to_string)),
    })
}

/// Waits until the point's client connections to the coordinator are gone (at most 10 s), and a
/// little longer for their worker connections: exited backends' CPU time then sits in their
/// postmasters' counters instead of racing with the read.
fn settle(admin: &mut postgres::Client) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let open: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                    AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[],
            )?
            .get(0);
        if open == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    Ok(())
}

fn worker_deadlocks(admin: &mut postgres::Client) -> Result<i64> {
    let rows = admin.query(
        "SELECT result FROM run_command_on_workers($$SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()$$)",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0).parse::<i64>().unwrap_or(0)).sum())
}

/// CPU seconds used so far by each node's processes: (coordinator, all workers). A node's
/// postmaster accumulates the CPU time of its exited backends (cutime/cstime); its live children
/// (the Citus maintenance daemon, background workers, open backends) are added.
fn cpu_by_node(cluster: &CitusCluster) -> (f64, f64) {
    let coordinator = node_cpu(cluster.coordinator().dir());
    let workers = cluster.workers().iter().map(|w| node_cpu(w.dir())).sum();
    (coordinator, workers)
}

fn node_cpu(dir: &std::path::Path) -> f64 {
    let Some(postmaster) = std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0.0;
    };
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = stat_times(postmaster, true);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if parent(pid) == Some(postmaster) {
                total += stat_times(pid, false);
            }
        }
    }
    total as f64 / ticks
}

/// Fields after the command name in /proc/<pid>/stat.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().skip(1).map(|f| f.parse::<i64>().unwrap_or(0).max(0) as u64).collect())
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid).and_then(|f| f.first().map(|p| *p as u32))
}

/// utime + stime (fields 14, 15), with the reaped children's (16, 17) when `children`.
fn stat_times(pid: u32, children: bool) -> u64 {
    // After "state": ppid is index 0, so field n (1-based in proc(5)) is index n - 4.
    stat_fields(pid).map_or(0, |f| {
        let own = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        let reaped = if children { f.get(12).copied().unwrap_or(0) + f.get(13).copied().unwrap_or(0) } else { 0 };
        own + reaped
    })
}

/// The Citus table printed beside the single server's.
pub fn table(runs: &[CitusRun]) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| {:<12} | {:>3} | {:>9} | {:>9} | {:>6} | {:>7} | {:>7} | {:>7} | {:>6} | {:>9} | {:<5} | {:>9} | {:>9} |",
        "workload",
        "thr",
        "citus tps",
        "single",
        "x single",
        "cross %",
        "p50 ms",
        "p99 ms",
        "errors",
        "deadlocks",
        "audit",
        "coord ms",
        "workers ms"
    );
    let _ = writeln!(t, "|{}|", ["-"; 13].map(|_| "---").join("|"));
    let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
    for r in runs {
        let _ = writeln!(
            t,
            "| {:<12} | {:>3} | {:>9.0} | {:>9} | {:>6} | {:>7.1} | {:>7} | {:>7} | {:>6} | {:>9} | {:<5} | {:>9} | {:>9} |",
            r.workload,
            r.threads,
            r.tps,
            opt(r.single_server_tps, 0),
            opt(r.ratio_single_server, 2),
            r.cross_worker_share * 100.0,
            opt(r.p50_ms, 2),
            opt(r.p99_ms, 2),
            r.errors,
            r.deadlocks,
            if r.audit_clean { "clean" } else { "FAIL" },
            opt(r.coordinator_cpu_ms, 3),
            opt(r.workers_cpu_ms, 3),
        );
    }
    t
}

/// What the Citus table's columns mean.
pub const NOTE: &str = "Citus: the library on a coordinator and two workers; `single` = the single server's `library` tps at \
the same workload and threads in this run; `cross %` = committed transfers whose accounts are on two workers (two-phase \
commit); `same-worker` / `cross-worker` draw only such pairs; `coord ms` / `workers ms` = CPU milliseconds per committed \
transfer spent by the coordinator's and the workers' server processes (embedded cluster only). All nodes and the clients \
share this machine's cores.";

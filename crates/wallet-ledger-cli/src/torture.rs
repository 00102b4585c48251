//! `wallet-ledger torture`: a bank workload under injected faults, and a checker that proves
//! afterwards that no money was created or lost, no key applied twice, every acknowledged
//! transfer kept, and every ambiguous one applied once or not at all (docs/reliability.md).
//!
//! K client threads transfer between N funded wallets with an idempotency key per transfer,
//! retrying with that key; R readers take snapshots of every balance; a fault thread terminates
//! client backends, crashes and restarts the server, pauses a backend holding row locks, and
//! (`--failover`) kills the primary and promotes its synchronous standby. Low lock and statement
//! timeouts and pool exhaustion are settings of the clients' pool and sessions.

mod checker;
mod faults;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use wallet_ledger::{Ledger, TransferId};
use wallet_ledger_embedded::cluster::multi_host_url;
use wallet_ledger_embedded::embedded::EmbeddedServer;

use crate::{exit, Target};
use checker::{Evidence, Verdict};
use faults::{Faults, LiveFaults, Plan, Servers, APPLICATION};
use workload::{Attempt, Live, Outcome, Setup, Snapshot};

/// Options of `wallet-ledger torture`.
#[derive(Args, Debug)]
pub struct TortureArgs {
    /// Seconds of load
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Client threads doing transfers
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Reader threads taking snapshots of every balance
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    /// Funded wallets the clients move money between
    #[arg(long, default_value_t = 16)]
    pub accounts: usize,
    /// Terminate a random client backend (preferably one in the middle of a transfer) every this many ms
    #[arg(long)]
    pub terminate_every_ms: Option<u64>,
    /// Crash the server (pg_ctl stop -m immediate) and restart it every this many seconds
    #[arg(long)]
    pub crash_every_s: Option<f64>,
    /// Lock and statement timeouts low enough to fire (lock_timeout 2 ms, statement_timeout 10 ms)
    #[arg(long)]
    pub low_timeouts: bool,
    /// Pool exhaustion: a pool of a quarter as many connections as threads, 20 ms checkout timeout
    #[arg(long)]
    pub pool_exhaustion: bool,
    /// Pause (SIGSTOP, then SIGCONT) a backend holding row locks every this many ms
    #[arg(long)]
    pub pause_every_ms: Option<u64>,
    /// How long each pause lasts, in ms
    #[arg(long, default_value_t = 300)]
    pub pause_ms: u64,
    /// A primary with a synchronous standby; mid-load the primary is killed and the standby promoted
    #[arg(long)]
    pub failover: bool,
    /// Every fault at once: terminate every 200 ms, crash every 20 s, low timeouts, pool
    /// exhaustion, a pause every 2 s, and a failover (explicit flags override the intervals)
    #[arg(long)]
    pub all_faults: bool,
    /// The clients' ledger combines concurrent transfers (the library's default); without it
    /// every transfer is its own call, so each fault meets each transfer alone
    #[arg(long)]
    pub combining: bool,
    /// Write the report as JSON to this file
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seed of the workload's random choices
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Plant a violation after the load, to show the checker catches it (testing the tool)
    #[arg(long, value_enum, hide = true)]
    pub plant: Option<Plant>,
}

/// A violation planted behind the tool's back before the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Plant {
    /// Delete an acknowledged transfer (and its entries) from the database.
    DeleteAcknowledged,
    /// Add an acknowledged attempt that never happened to the clients' log.
    FakeAcknowledged,
}

/// The resolved configuration.
#[derive(Debug)]
struct Config {
    duration: Duration,
    clients: usize,
    readers: usize,
    accounts: usize,
    plan: Plan,
    low_timeouts: bool,
    pool_exhaustion: bool,
    failover: bool,
    combining: bool,
}

impl TortureArgs {
    fn config(&self) -> Result<Config> {
        if !(self.duration > 0.0 && self.duration <= 86_400.0) {
            bail!("--duration must be between 0 and 86400 seconds");
        }
        if self.clients == 0 || self.clients > 200 || self.readers > 50 {
            bail!("--clients must be 1 to 200 and --readers at most 50");
        }
        if self.accounts < 2 || self.accounts > 100_000 {
            bail!("--accounts must be 2 to 100000");
        }
        let all = self.all_faults;
        let ms =
            |v: Option<u64>, default: u64| v.or(all.then_some(default)).filter(|&v| v > 0).map(Duration::from_millis);
        let crash_every = self
            .crash_every_s
            .or(all.then_some(20.0))
            .filter(|&s| s > 0.0)
            .map(|s| Duration::from_secs_f64(s.max(0.5)));
        let duration = Duration::from_secs_f64(self.duration);
        let failover = self.failover || all;
        Ok(Config {
            duration,
            clients: self.clients,
            readers: self.readers,
            accounts: self.accounts,
            plan: Plan {
                terminate_every: ms(self.terminate_every_ms, 200),
                crash_every,
                pause_every: ms(self.pause_every_ms, 2000),
                pause_for: Duration::from_millis(self.pause_ms.clamp(1, 10_000)),
                failover_at: failover.then(|| duration.mul_f64(0.4)),
                quiet_tail: checker::RECOVERY_TARGET.min(duration / 3),
            },
            low_timeouts: self.low_timeouts || all,
            pool_exhaustion: self.pool_exhaustion || all,
            failover,
            combining: self.combining,
        })
    }
}

/// Runs the torture; the exit code is 0 only when every check passed, 3 when one failed.
pub fn run(args: TortureArgs, target: &Target) -> Result<ExitCode> {
    let config = args.config()?;
    let embedded = target.database_url.is_none();
    if !embedded && (config.failover || config.plan.crash_every.is_some() || config.plan.pause_every.is_some()) {
        bail!("--failover, --crash-every-s and --pause-every-ms need the servers the tool starts itself: drop --database-url");
    }
    let run_id = format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0));
    eprintln!("torture: {config:?}");

    // Servers.
    let primary = if embedded { Some(EmbeddedServer::start().context("start the embedded server")?) } else { None };
    let base_url = match (&primary, &target.database_url) {
        (Some(p), _) => p.create_database("torture")?,
        (None, Some(url)) => url.clone(),
        (None, None) => unreachable!("embedded when no URL"),
    };
    let dbname = match &primary {
        Some(_) => "torture".to_string(),
        None => current_database(&base_url)?,
    };
    let setup_ledger = Ledger::builder(&base_url).pool_size(2).build().context("connect")?;
    let setup = workload::setup(&setup_ledger, config.accounts, &run_id)?;
    drop(setup_ledger);
    let standby = match (&primary, config.failover) {
        (Some(p), true) => {
            let s = p.start_standby().context("start the standby")?;
            p.require_synchronous_standby(Duration::from_secs(30)).context("make the standby synchronous")?;
            Some(s)
        }
        _ => None,
    };
    let (url, admin_url) = match (&primary, &standby) {
        (Some(p), Some(s)) => (multi_host_url(&[p, s], "torture"), multi_host_url(&[p, s], "postgres")),
        (Some(p), None) => (p.url("torture"), p.url("postgres")),
        (None, _) => (base_url.clone(), base_url.clone()),
    };

    // The clients' ledger: the faults that are settings.
    let mut session = format!("application_name={APPLICATION}");
    if config.low_timeouts {
        session.push_str(" options='-c lock_timeout=2 -c statement_timeout=10'");
    }
    let threads = (config.clients + config.readers) as u32;
    let mut builder =
        Ledger::builder(&with_params(&url, &session)).max_retries(8).migrate(false).combining(config.combining);
    builder = if config.pool_exhaustion {
        builder.pool_size((threads / 4).max(1)).checkout_timeout(Duration::from_millis(20))
    } else {
        builder.pool_size(threads).checkout_timeout(Duration::from_secs(10))
    };
    let ledger = connect_clients(&builder, config.pool_exhaustion)?;

    // The load.
    let servers = Servers { primary: primary.as_ref(), standby: standby.as_ref(), admin_url, dbname };
    let (attempts, snapshots, faults, panics, load_end) = load(&config, &ledger, &setup, &servers, args.seed);
    let stats = ledger.stats();
    drop(ledger);

    // Check (on a fresh pool, without the low timeouts).
    let check_ledger = Ledger::builder(&url).pool_size(2).migrate(false).build().context("connect for the check")?;
    let mut attempts = attempts;
    if let Some(plant) = args.plant {
        plant_violation(plant, &check_ledger, &setup, &mut attempts)?;
    }
    let deadlocks_in_logs =
        primary.as_ref().map(|p| faults::deadlocks_in_log(p) + standby.as_ref().map_or(0, faults::deadlocks_in_log));
    let evidence = Evidence {
        setup: &setup,
        attempts: &attempts,
        snapshots: &snapshots,
        faults: &faults,
        deadlocks_in_logs,
        panics,
        load_end,
    };
    let verdict = checker::check(&check_ledger, &evidence).context("check")?;
    let mut report = report(&args, &config, &faults, &verdict, load_end);
    report["library"] = json!({
        "retries": stats.retries,
        "succeeded": stats.succeeded,
        "refused": stats.refused,
        "lock_unavailable": stats.lock_unavailable,
        "failed": stats.failed,
    });
    println!("{}", table(&config, &faults, &verdict));
    println!("  library retries inside calls (Ledger::stats)          {}", stats.retries);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(exit::Outcome::checked(verdict.passed()).into())
}

type Loaded = (Vec<Attempt>, Vec<Snapshot>, Faults, usize, Duration);

/// Clients, readers and the fault thread, with a progress bar, until the duration is over and
/// the last client has settled its transfer in flight.
fn load(config: &Config, ledger: &Ledger, setup: &Setup, servers: &Servers<'_>, seed: u64) -> Loaded {
    let live = Live::default();
    let live_faults = LiveFaults::default();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + config.duration;
    let bar = ProgressBar::new(config.duration.as_millis() as u64);
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    thread::scope(|scope| {
        let clients: Vec<_> = (0..config.clients)
            .map(|i| {
                let (live, stop) = (&live, &stop);
                scope.spawn(move || workload::client(ledger, setup, i, seed, start, deadline, stop, live))
            })
            .collect();
        let readers: Vec<_> = (0..config.readers)
            .map(|_| {
                let (live, stop) = (&live, &stop);
                scope.spawn(move || workload::reader(ledger, setup, deadline, stop, live))
            })
            .collect();
        let fault_thread = {
            let (live_faults, stop) = (&live_faults, &stop);
            scope.spawn(move || faults::run(&config.plan, servers, seed, start, deadline, stop, live_faults))
        };
        while clients.iter().any(|c| !c.is_finished()) {
            let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            bar.set_position((start.elapsed().as_millis() as u64).min(config.duration.as_millis() as u64));
            bar.set_message(format!(
                "{}acked {} refused {} failed {} ambiguous {} snapshots {} faults {}",
                if Instant::now() > deadline { "settling: " } else { "" },
                l(&live.acknowledged),
                l(&live.refused),
                l(&live.failed),
                l(&live.ambiguous),
                l(&live.snapshots),
                l(&live_faults.injected),
            ));
            thread::sleep(Duration::from_millis(100));
        }
        let mut panics = 0;
        let mut attempts = Vec::new();
        for c in clients {
            match c.join() {
                Ok(log) => attempts.extend(log),
                Err(_) => panics += 1,
            }
        }
        let load_end = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut snapshots = Vec::new();
        for r in readers {
            match r.join() {
                Ok(s) => snapshots.extend(s),
                Err(_) => panics += 1,
            }
        }
        let faults = fault_thread.join().unwrap_or_else(|_| {
            panics += 1;
            Faults::default()
        });
        bar.finish_and_clear();
        (attempts, snapshots, faults, panics, load_end)
    })
}

/// Plants a violation the checker must report (for the tool's own tests).
fn plant_violation(plant: Plant, ledger: &Ledger, setup: &Setup, attempts: &mut Vec<Attempt>) -> Result<()> {
    match plant {
        Plant::DeleteAcknowledged => {
            let id = attempts
                .iter()
                .find_map(|a| if let Outcome::Acknowledged(r) = &a.outcome { Some(r.transfer_id.0) } else { None })
                .context("no acknowledged transfer to delete")?;
            let mut conn = ledger.connection()?;
            let mut tx = conn.client().transaction()?;
            tx.execute("DELETE FROM wallet_ledger.entries WHERE transfer_id = $1", &[&id])?;
            tx.execute("DELETE FROM wallet_ledger.transfers WHERE id = $1", &[&id])?;
            tx.commit()?;
            eprintln!("planted: deleted acknowledged transfer {}", TransferId(id));
        }
        Plant::FakeAcknowledged => {
            let mut fake = attempts
                .iter()
                .find(|a| matches!(a.outcome, Outcome::Acknowledged(_)))
                .cloned()
                .context("no acknowledged transfer to copy")?;
            fake.key = format!("{}planted", setup.key_prefix());
            attempts.push(fake);
            eprintln!("planted: an acknowledged attempt no client made");
        }
    }
    Ok(())
}

fn current_database(url: &str) -> Result<String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).context("connect")?;
    Ok(client.query_one("SELECT current_database()", &[])?.get(0))
}

/// `url` with `key=value` parameters added, for key=value strings and URLs alike.
fn with_params(url: &str, params: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let query: Vec<String> = params_of(params)
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.replace('%', "%25").replace(' ', "%20").replace('=', "%3D")))
            .collect();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{}", query.join("&"))
    } else {
        format!("{url} {params}")
    }
}

/// Splits `a=b c='d e'` into pairs.
fn params_of(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        let (value, tail) = if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'').unwrap_or(quoted.len());
            (quoted[..end].to_string(), quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        out.push((key, value));
        rest = tail.trim_start();
    }
    out
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn report(args: &TortureArgs, config: &Config, faults: &Faults, v: &Verdict, load_end: Duration) -> Value {
    json!({
        "tool": "wallet-ledger torture",
        "version": env!("CARGO_PKG_VERSION"),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "command": crate::bench::command_line(),
        "config": {
            "duration_s": secs(config.duration),
            "clients": config.clients,
            "readers": config.readers,
            "accounts": config.accounts,
            "terminate_every_ms": config.plan.terminate_every.map(|d| d.as_millis() as u64),
            "crash_every_s": config.plan.crash_every.map(secs),
            "pause_every_ms": config.plan.pause_every.map(|d| d.as_millis() as u64),
            "pause_ms": config.plan.pause_for.as_millis() as u64,
            "low_timeouts": config.low_timeouts,
            "pool_exhaustion": config.pool_exhaustion,
            "combining": config.combining,
            "failover": config.failover,
            "seed": args.seed,
            "planted": args.plant.map(|p| format!("{p:?}")),
        },
        "load_s": secs(load_end),
        "faults": {
            "terminated": faults.terminated,
            "terminated_active": faults.terminated_active,
            "terminated_sync_wait": faults.terminated_sync_wait,
            "crashes": faults.events.iter().filter(|e| e.kind == "crash").count(),
            "failovers": faults.events.iter().filter(|e| e.kind == "failover").count(),
            "pauses": faults.pauses,
            "pauses_holding_locks": faults.pauses_holding_locks,
            "pause_waiters_max": faults.pause_waiters_max,
            "pool_timeouts": v.failures.get("pool timeout").copied().unwrap_or(0),
            "lock_timeouts": v.failures.get("lock unavailable").copied().unwrap_or(0),
            "statement_timeouts": v.failures.get("statement timeout").copied().unwrap_or(0),
            "errors": faults.errors,
        },
        "operations": v.operations,
        "attempts": v.attempts,
        "failures": v.failures,
        "snapshots": v.snapshots,
        "deadlocks": faults.deadlocks_counted,
        "recovery": v.recovery.iter().map(|r| json!({
            "kind": r.kind,
            "at_s": secs(r.at),
            "back_after_s": secs(r.back_at - r.at),
            "first_ack_after_s": r.first_ack_after.map(secs),
        })).collect::<Vec<_>>(),
        "checks": v.checks.iter().map(|c| json!({"name": c.name, "passed": c.passed, "detail": c.detail})).collect::<Vec<_>>(),
        "verdict": if v.passed() { "PASS" } else { "FAIL" },
    })
}

fn table(config: &Config, faults: &Faults, v: &Verdict) -> String {
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("  {k:<52} {val}\n"));
    line("== faults injected", String::new());
    line("backends terminated", faults.terminated.to_string());
    line("  of them running a statement", faults.terminated_active.to_string());
    line("  of them waiting for the synchronous standby", faults.terminated_sync_wait.to_string());
    line("crashes (immediate stop + restart)", faults.events.iter().filter(|e| e.kind == "crash").count().to_string());
    line(
        "failovers (primary killed, standby promoted)",
        faults.events.iter().filter(|e| e.kind == "failover").count().to_string(),
    );
    line(
        "backends paused (SIGSTOP/SIGCONT)",
        format!("{} ({} holding row locks)", faults.pauses, faults.pauses_holding_locks),
    );
    line("low lock/statement timeouts", config.low_timeouts.to_string());
    line("pool exhaustion", config.pool_exhaustion.to_string());
    line("== transfers by final outcome", String::new());
    for (k, n) in &v.operations {
        line(k, n.to_string());
    }
    line("== attempts by outcome", String::new());
    for (k, n) in &v.attempts {
        line(k, n.to_string());
    }
    for (k, n) in &v.failures {
        line(&format!("  failed: {k}"), n.to_string());
    }
    line("== snapshots", String::new());
    for (k, n) in &v.snapshots {
        line(k, n.to_string());
    }
    line("== recovery (server back -> first acknowledged transfer)", String::new());
    for r in &v.recovery {
        line(
            &format!(
                "{} at {:.1} s (server back after {:.2} s)",
                r.kind,
                r.at.as_secs_f64(),
                (r.back_at - r.at).as_secs_f64()
            ),
            r.first_ack_after.map_or("none".into(), |d| format!("{:.3} s", d.as_secs_f64())),
        );
    }
    line("== checks", String::new());
    for c in &v.checks {
        line(&format!("{} {}", if c.passed { "PASS" } else { "FAIL" }, c.name), c.detail.clone());
    }
    out.push_str(&format!("verdict: {}\n", if v.passed() { "PASS" } else { "FAIL" }));
    out
}

/// The clients' ledger. With pool exhaustion its checkout timeout (20 ms) also bounds making a
/// connection, which a loaded machine can exceed: that is a fault the load counts, not a reason
/// to fail before the load starts, so the first connection is tried again for up to 5 s.
fn connect_clients(builder: &wallet_ledger::LedgerBuilder, pool_exhaustion: bool) -> Result<Ledger> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match builder.clone().build() {
            Err(wallet_ledger::LedgerError::Pool(_)) if pool_exhaustion && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result.context("connect the clients' ledger"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_params;

    #[test]
    fn params_go_into_both_forms() {
        assert_eq!(with_params("host=/s dbname=x", "application_name=a"), "host=/s dbname=x application_name=a");
        assert_eq!(
            with_params("postgres://u@h/db", "application_name=a options='-c x=1'"),
            "postgres://u@h/db?application_name=a&options=-c%20x%3D1"
        );
    }
}

//! `wallet-ledger bench`: transfers/s under contention, beside pgbench on the same server.
//!
//! On a throwaway embedded PostgreSQL (or `--database-url`), the bench builds a template
//! database of funded wallets, then measures each point (workload x threads x mode) on a fresh
//! copy of it for a fixed time: the library, pgbench on the library's own SQL (the ceiling of
//! the design), `pgbench -b tpcb-like` (the yardstick), the library's algorithm sent as separate
//! statements, two broken controls (lost updates, deadlocks), and holds: hold then capture as one
//! operation. After each point it reads the server's deadlock counter and audits the ledger; a
//! library run that leaves the ledger unclean stops the bench. Then the expiry section: the same
//! lapsed holds drained by 1, 2 and 4 `expire_holds` workers (and a control without SKIP LOCKED)
//! while a sampler counts lock waits. The report is a table on stdout and a folder with
//! report.json, report.md and throughput.svg.

mod alternatives;
mod citus;
mod db;
mod driver;
mod expiry;
mod feed;
mod hist;
mod measure;
mod pgbench;
mod plan;
mod plot;
mod progress;
mod report;
mod setup;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::exit::Outcome;
use crate::Target;
use db::Server;
use measure::Bench;
use pgbench::Pgbench;
use plan::{Mode, Point, Settings, Workload};
use progress::Progress;
use report::{Report, Run};

/// Options of `wallet-ledger bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Workloads, comma-separated: uniform, hot, pair [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Client thread counts, comma-separated [default: 1,2,4,8,16,32; --quick: 2]
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Seconds per measured point [default: 5; --quick: 1]
    #[arg(long)]
    pub duration: Option<u64>,
    /// Accounts of the uniform workload [default: 10000; --quick: 1000]
    #[arg(long)]
    pub accounts: Option<usize>,
    /// Modes, comma-separated [default: all; multi-statement then only on uniform at 1 and 8 threads,
    /// hold-capture on uniform and hot; expire-no-skip-locked always only at the most expiry workers]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub modes: Vec<Mode>,
    /// pgbench scale factor for tpcb-like [default: the largest thread count, as pgbench advises; --quick: 1]
    #[arg(long)]
    pub pgbench_scale: Option<u32>,
    /// Report folder (report.json, report.md, throughput.svg)
    #[arg(long, default_value = "bench-report")]
    pub out: PathBuf,
    /// Seed of the random account pairs
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Lapsed holds each expiry run drains, spread over the uniform accounts [default: 100000; --quick: 1000]
    #[arg(long)]
    pub expiry_holds: Option<usize>,
    /// Expiry worker counts, comma-separated [default: 1,2,4]
    #[arg(long, value_delimiter = ',')]
    pub expiry_workers: Vec<usize>,
    /// Holds per `expire_holds` call [default: 500; --quick: 100]
    #[arg(long)]
    pub expiry_batch: Option<u32>,
    /// A smoke run under 30 seconds: 2 threads, 1 s per point, 1000 accounts, 1000 holds to expire
    #[arg(long)]
    pub quick: bool,
    /// Measure every point this many times, round by round (all points, then all of them
    /// again), so that a drift of the machine's speed reaches every point alike; each point
    /// reports its median round, and every round's transfers/s are listed beside it. A point
    /// with a round that had deadlocks, errors, an unclean audit or money created or lost
    /// reports that round instead: a median never hides a failure or a broken control's damage
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Measure `library` and `default` at a point one after the other, each on its own
    /// database, instead of together in alternating 0.5 s slices on one database (the
    /// default: a drift of the machine's speed then falls on both alike)
    #[arg(long)]
    pub sequential: bool,
    /// Also run the library on a Citus cluster (an embedded coordinator and two workers, or
    /// DATABASE_URL_CITUS): every --workloads workload plus same-worker and cross-worker, at every
    /// thread count, reported beside the single server's library runs
    #[arg(long)]
    pub citus: bool,
    /// Combining lanes of the combining modes (default, combined, async-default), as
    /// `LedgerBuilder::combining_lanes`: for a server with many cores
    #[arg(long, default_value_t = 1)]
    pub combining_lanes: usize,
}

impl BenchArgs {
    /// The settings: explicit flags first, then the `--quick` defaults, then the full ones.
    fn settings(self) -> Settings {
        let quick = self.quick;
        let pick =
            |given: Option<u64>, quick_value: u64, full: u64| given.unwrap_or(if quick { quick_value } else { full });
        let mut threads = if !self.threads.is_empty() {
            self.threads
        } else if quick {
            vec![2]
        } else {
            vec![1, 2, 4, 8, 16, 32]
        };
        threads.sort_unstable();
        threads.dedup();
        let max_threads = threads.last().copied().unwrap_or(1) as u64;
        let mut expiry_workers = if self.expiry_workers.is_empty() { vec![1, 2, 4] } else { self.expiry_workers };
        expiry_workers.sort_unstable();
        expiry_workers.dedup();
        let workloads = if self.workloads.is_empty() {
            vec![Workload::Uniform, Workload::Hot, Workload::Pair]
        } else {
            self.workloads
        };
        Settings {
            workloads,
            duration_s: pick(self.duration, 1, 5),
            accounts: pick(self.accounts.map(|a| a as u64), 1000, 10_000) as usize,
            modes_explicit: !self.modes.is_empty(),
            modes: if self.modes.is_empty() { Mode::ALL.to_vec() } else { self.modes },
            pgbench_scale: pick(self.pgbench_scale.map(u64::from), 1, max_threads) as u32,
            threads,
            out: self.out,
            quick,
            seed: self.seed,
            expiry_holds: pick(self.expiry_holds.map(|h| h as u64), 1_000, 100_000) as usize,
            expiry_workers,
            expiry_batch: pick(self.expiry_batch.map(u64::from), 100, 500) as u32,
            rounds: self.rounds,
            sequential: self.sequential,
            combining_lanes: self.combining_lanes,
        }
    }
}

/// A run of the ledger's own modes broke an invariant; the bench stops and exits with code 3.
#[derive(Debug)]
pub struct InvariantBroken(pub String);

impl std::fmt::Display for InvariantBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvariantBroken {}

/// Runs the bench and writes the report. Exit code 3 when a run of the ledger's own modes broke
/// an invariant (a deadlock, an unclean audit), 1 when one had errors; the broken controls
/// run beside them are expected to break invariants and do not count.
pub fn run(args: BenchArgs, target: &Target) -> Result<ExitCode> {
    let with_citus = args.citus;
    let settings = args.settings();
    settings.check()?;
    let started = unix_now();
    let load_before = loadavg();
    let mut notes = Vec::new();
    let mut server = Server::start(target)?;
    let (pg_version, pg_settings) = server.settings().context("read the server's settings")?;
    let durability = durability_check(&pg_settings);
    let pgbench = find_pgbench(&server, &settings, &mut notes);
    let points: Vec<Point> =
        plan::points(&settings).into_iter().filter(|p| !p.mode.is_pgbench() || pgbench.is_some()).collect();
    let mut postgres = BTreeMap::from([
        ("server", json!(server.describe())),
        ("version", json!(pg_version)),
        ("settings", json!(pg_settings)),
        ("checkpoint_before_each_point", json!(server.can_checkpoint)),
    ]);
    let pgbench_info = pgbench_info(pgbench.as_ref());
    let mut bench = prepare(server, &settings, pgbench, &points)?;
    let mut runs = Vec::new();
    let mut failure = measure_all(&mut bench, &points, settings.rounds, &mut runs).err();
    let (mut citus_cluster, mut citus_runs) = (None, Vec::new());
    if with_citus && failure.is_none() {
        let single =
            runs.iter().filter(|r| r.mode == Mode::Library.name()).map(|r| ((r.workload, r.threads), r.tps)).collect();
        match citus::run(&settings, &single, &bench.progress) {
            Ok((cluster, measured)) => (citus_cluster, citus_runs) = (Some(cluster), measured),
            Err(e) => failure = Some(e.context("the Citus section")),
        }
    }
    bench.progress.finish();
    if let Err(e) = cleanup(&mut bench) {
        notes.push(format!("cleanup: {e:#}"));
    }
    if let Some(e) = &failure {
        notes.push(format!("the bench stopped early: {e:#}"));
    }
    postgres.insert("embedded", json!(bench.server.is_embedded()));
    report::fill_ratios(&mut runs);
    let report = Report {
        tool: "wallet-ledger bench",
        version: env!("CARGO_PKG_VERSION"),
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        command: command_line(),
        started_unix_s: started,
        finished_unix_s: unix_now(),
        config: config(&settings),
        machine: machine(load_before),
        postgres,
        pgbench: pgbench_info,
        checks: report::checks(&runs).into_iter().chain([durability]).collect(),
        runs,
        notes,
        citus_cluster,
        citus: citus_runs,
    };
    finish(&report, &settings, failure)
}

/// Prints the table and the checks, writes the folder, and picks the exit code.
fn finish(report: &Report, settings: &Settings, failure: Option<anyhow::Error>) -> Result<ExitCode> {
    report::write(report, &settings.out)?;
    println!("{}", report::table(&report.runs));
    if !report.citus.is_empty() {
        println!("Citus on {}\n\n{}", report.citus_cluster.as_deref().unwrap_or("?"), citus::table(&report.citus));
    }
    for c in &report.checks {
        let verdict = c.passed.map_or("n/a ", |p| if p { "PASS" } else { "FAIL" });
        println!("{verdict} {}: {}", c.name, c.detail);
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    println!("report written to {}", settings.out.display());
    if let Some(e) = failure {
        let e = e.context(format!("partial report in {}", settings.out.display()));
        if e.chain().any(|c| c.is::<InvariantBroken>()) {
            eprintln!("error: {}", crate::chain(&e));
            return Ok(Outcome::Violation.into());
        }
        return Err(e);
    }
    if report::library_violated(&report.runs) || report.citus.iter().any(|r| !r.audit_clean) {
        eprintln!("error: a library run deadlocked or left an unclean audit (see the report)");
        return Ok(Outcome::Violation.into());
    }
    if report::library_failed(&report.runs) || report.citus.iter().any(|r| r.errors > 0) {
        eprintln!("error: a library run had errors (see the report)");
        return Ok(Outcome::Failure.into());
    }
    Ok(ExitCode::SUCCESS)
}

/// No figure may come from weakened durability: fsync and synchronous_commit must be on.
fn durability_check(settings: &BTreeMap<String, String>) -> report::Check {
    let get = |name: &str| settings.get(name).map_or("?", String::as_str);
    let (fsync, sync) = (get("fsync"), get("synchronous_commit"));
    report::Check {
        name: "durability: fsync on and synchronous_commit on for every figure".into(),
        passed: Some(fsync == "on" && sync == "on"),
        detail: format!("fsync={fsync}, synchronous_commit={sync}"),
    }
}

/// pgbench when a pgbench mode is wanted and it is installed; otherwise a note says why not.
fn find_pgbench(server: &Server, settings: &Settings, notes: &mut Vec<String>) -> Option<Pgbench> {
    if !settings.modes.iter().any(|m| m.is_pgbench()) {
        return None;
    }
    match Pgbench::find(server.bin_dir().as_deref()) {
        Ok(p) => Some(p),
        Err(e) => {
            notes.push(format!("{e:#}: the pgbench references were not measured"));
            None
        }
    }
}

fn pgbench_info(pgbench: Option<&Pgbench>) -> BTreeMap<&'static str, Value> {
    match pgbench {
        Some(p) => BTreeMap::from([
            ("available", json!(true)),
            ("path", json!(p.path.display().to_string())),
            ("version", json!(p.version)),
            ("protocol", json!("prepared (-M prepared), one pgbench thread per client (-j = -c)")),
            ("own_sql_script", json!(pgbench::OWN_SQL_SCRIPT)),
        ]),
        None => BTreeMap::from([("available", json!(false))]),
    }
}

/// Builds the template (and the tpcb-like database) before the first point.
fn prepare<'a>(
    mut server: Server,
    settings: &'a Settings,
    pgbench: Option<Pgbench>,
    points: &[Point],
) -> Result<Bench<'a>> {
    let progress = Progress::new(points.len() * settings.rounds, Duration::from_secs(settings.duration_s));
    let rounds = if settings.rounds > 1 { format!(", {} rounds", settings.rounds) } else { String::new() };
    progress.log(&format!(
        "bench on {}: {} points of {} s{rounds}",
        server.describe(),
        points.len(),
        settings.duration_s
    ));
    progress.set_message(format!("setting up {} funded accounts", settings.accounts));
    let template = server.db_name("template");
    let start = Instant::now();
    let accounts = setup::build_template(&mut server, &template, settings.accounts).context("set up the accounts")?;
    progress.log(&format!("{} funded accounts ready in {:.1} s", settings.accounts, start.elapsed().as_secs_f64()));
    let mut tpcb_db = None;
    if let Some(p) = pgbench.as_ref().filter(|_| points.iter().any(|p| p.mode == Mode::PgbenchTpcbLike)) {
        progress.set_message(format!("pgbench -i -s {}", settings.pgbench_scale));
        let name = server.db_name("tpcb");
        let url = server.create(&name, None)?;
        let start = Instant::now();
        p.init_tpcb(&url, settings.pgbench_scale)?;
        progress.log(&format!(
            "pgbench -i -s {} done in {:.1} s",
            settings.pgbench_scale,
            start.elapsed().as_secs_f64()
        ));
        tpcb_db = Some(name);
    }
    Ok(Bench { server, settings, template, accounts, pgbench, tpcb_db, expiry_template: None, progress })
}

/// Measures every point in order, `rounds` times round by round, logging each one as it
/// completes; `runs` gets one record per point (its median round, see [`report::representative`]).
/// On an error, the points measured in every round so far are kept.
fn measure_all(bench: &mut Bench<'_>, points: &[Point], rounds: usize, runs: &mut Vec<Run>) -> Result<()> {
    let mut by_point: Vec<Vec<Run>> = points.iter().map(|_| Vec::with_capacity(rounds)).collect();
    let mut result = Ok(());
    'rounds: for round in 1..=rounds {
        for (i, &point) in points.iter().enumerate() {
            let prefix = if rounds > 1 { format!("round {round}/{rounds}: ") } else { String::new() };
            let label = format!("{prefix}{} {} {} threads", point.workload.name(), point.mode.name(), point.threads);
            let group = interleaved_group(points, i, bench.settings.sequential);
            if group == 0 {
                continue;
            }
            bench.progress.set_message(format!("[{}/{}] {label}", i + 1, points.len()));
            let measured = if group > 1 {
                bench.interleaved(&points[i..i + group]).map(|runs| (i..).zip(runs).collect::<Vec<_>>())
            } else {
                bench.measure(point).map(|run| vec![(i, run)])
            };
            match measured.with_context(|| label.clone()) {
                Ok(measured) => {
                    for (at, run) in measured {
                        let label = format!("{} {} {} threads", run.workload, run.mode, run.threads);
                        let interleaved = if run.interleaved { " (interleaved)" } else { "" };
                        bench.progress.finish_point();
                        bench.progress.log(&format!("{prefix}{label}{interleaved}: {}", summary(&run)));
                        by_point[at].push(run);
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break 'rounds;
                }
            }
        }
    }
    let complete = by_point.iter().map(Vec::len).max().unwrap_or(0);
    runs.extend(by_point.into_iter().filter(|r| !r.is_empty()).map(|r| report::representative(r, complete)));
    result
}

/// How many points from `i` on are measured together, interleaved: a `library` point and the
/// points right after it at the same workload and thread count that interleave with it
/// (`default`, `library-twin`); 0 for those points themselves (measured with their `library`);
/// 1 for every other point, and for all under `sequential`.
fn interleaved_group(points: &[Point], i: usize, sequential: bool) -> usize {
    let at = points[i];
    let same_point = |p: &Point| p.workload == at.workload && p.threads == at.threads;
    let beside = |p: &Point| p.mode.interleaves_with_library() && same_point(p);
    if sequential {
        return 1;
    }
    if at.mode.interleaves_with_library() {
        let before = points[..i].iter().rev().find(|p| !beside(p));
        let with_library = before.is_some_and(|p| p.mode == Mode::Library && same_point(p));
        return usize::from(!with_library);
    }
    if at.mode != Mode::Library {
        return 1;
    }
    1 + points[i + 1..].iter().take_while(|p| beside(p)).count()
}

/// One line on a finished point, for the log.
fn summary(run: &Run) -> String {
    let tail = format!("{} deadlocks, {} errors", run.deadlocks, run.errors);
    if let Some(expired) = run.holds_expired {
        return format!(
            "{expired} holds in {:.2} s, {:.0} holds expired/s, lock waits in {} of {} samples, {tail}",
            run.duration_s,
            run.tps,
            run.lock_wait_samples.unwrap_or(0),
            run.lock_samples.unwrap_or(0)
        );
    }
    let money = run.money_created.as_deref().map(|m| format!(", money {m}")).unwrap_or_default();
    let unit = if run.mode == Mode::HoldCapture.name() { "hold+capture pairs/s" } else { "transfers/s" };
    format!("{:.0} {unit}, p99 {:.2} ms, {tail}{money}", run.tps, run.p99_ms.unwrap_or(0.0))
}

/// Drops the bench's databases (matters on a --database-url server).
fn cleanup(bench: &mut Bench<'_>) -> Result<()> {
    let template = bench.template.clone();
    bench.server.drop_db(&template)?;
    if let Some(expiry) = bench.expiry_template.take() {
        bench.server.drop_db(&expiry)?;
    }
    if let Some(tpcb) = bench.tpcb_db.take() {
        bench.server.drop_db(&tpcb)?;
    }
    Ok(())
}

fn config(s: &Settings) -> BTreeMap<&'static str, Value> {
    let names = |v: Vec<&str>| json!(v);
    BTreeMap::from([
        ("workloads", names(s.workloads.iter().map(|w| w.name()).collect())),
        ("modes", names(s.modes.iter().map(|m| m.name()).collect())),
        ("threads", json!(s.threads)),
        ("duration_s", json!(s.duration_s)),
        ("accounts", json!(s.accounts)),
        ("hot_accounts", json!(plan::HOT_ACCOUNTS)),
        ("amount", json!(driver::AMOUNT.to_string())),
        ("pgbench_scale", json!(s.pgbench_scale)),
        ("quick", json!(s.quick)),
        ("seed", json!(s.seed)),
        ("expiry_holds", json!(s.expiry_holds)),
        ("expiry_workers", json!(s.expiry_workers)),
        ("expiry_batch", json!(s.expiry_batch)),
        ("rounds", json!(s.rounds)),
        ("combining_lanes", json!(s.combining_lanes)),
    ])
}

/// The machine: CPUs, memory, kernel, and the load average before and after (a busy machine
/// distorts every figure).
fn machine(load_before: Option<String>) -> BTreeMap<&'static str, Value> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string())
    };
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    BTreeMap::from([
        ("cpus", json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))),
        ("cpu_model", json!(field(&cpuinfo, "model name"))),
        ("memory", json!(field(&meminfo, "MemTotal"))),
        ("kernel", json!(read("/proc/sys/kernel/osrelease").trim())),
        ("loadavg_before", json!(load_before)),
        ("loadavg_after", json!(loadavg())),
    ])
}

fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The command line, with the value of --database-url hidden (it may hold a password).
pub(crate) fn command_line() -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for arg in std::env::args() {
        if hide_next {
            out.push("<hidden>".to_string());
            hide_next = false;
        } else if arg.starts_with("--database-url=") {
            out.push("--database-url=<hidden>".to_string());
        } else {
            hide_next = arg == "--database-url";
            out.push(arg);
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan::Workload;

    #[test]
    fn library_and_the_modes_beside_it_at_one_point_are_measured_as_one_group() {
        let p = |workload, mode, threads| Point { workload, mode, threads };
        let (u, h) = (Workload::Uniform, Workload::Hot);
        let points = [
            p(u, Mode::Library, 1),
            p(u, Mode::Default, 1),
            p(u, Mode::LibraryTwin, 1),
            p(u, Mode::Batch100, 1),
            p(u, Mode::Library, 2),
            p(u, Mode::HoldCapture, 2),
            p(u, Mode::Default, 2),
            p(h, Mode::Default, 2),
            p(h, Mode::Library, 4),
            p(h, Mode::Default, 4),
        ];
        let groups: Vec<usize> = (0..points.len()).map(|i| interleaved_group(&points, i, false)).collect();
        // A default that does not follow its library (directly, or after another of its group)
        // is measured alone.
        assert_eq!(groups, [3, 0, 0, 1, 1, 1, 1, 1, 2, 0]);
        assert!((0..points.len()).all(|i| interleaved_group(&points, i, true) == 1));
    }
}

//! The report: one record per measured point, the ratios to the pgbench references, the checks
//! of the targets, and the files (`report.json`, `report.md`, `throughput.svg`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result};
use serde::Serialize;
use wallet_ledger::Decimal;

use super::plan::Mode;

/// One measured point. `None` (JSON null) where a figure does not apply to the mode.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `uniform`, `hot` or `pair`.
    pub workload: &'static str,
    /// `library`, `pgbench-tpcb-like`, `pgbench-own-sql`, `multi-statement`, `naive`, `request-order`.
    pub mode: &'static str,
    /// Client threads (pgbench clients).
    pub threads: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Committed transfers (pgbench: transactions processed).
    pub transfers: u64,
    /// Committed transfers (pgbench: transactions) per second.
    pub tps: f64,
    /// Median latency of one call.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
    /// Largest latency.
    pub max_ms: Option<f64>,
    /// Mean latency.
    pub mean_ms: Option<f64>,
    /// Attempts retried inside the library (server rollbacks not surfaced as errors); 0 for the
    /// controls, which never retry; null for pgbench.
    pub retries: Option<i64>,
    /// Typed refusals (nothing changed); null for tpcb-like.
    pub refusals: Option<u64>,
    /// Calls that failed (deadlocks included).
    pub errors: u64,
    /// Deadlocks the server detected in this point's database (pg_stat_database).
    pub deadlocks: i64,
    /// The ledger audit after the point; null for tpcb-like (no ledger).
    pub audit_clean: Option<bool>,
    /// Sum of all balances after the point (0 = conserved; > 0 created, < 0 lost).
    pub money_created: Option<String>,
    /// tps / tps of pgbench-own-sql at the same workload and threads.
    pub ratio_pgbench_own_sql: Option<f64>,
    /// tps / tps of pgbench-tpcb-like at the same threads.
    pub ratio_pgbench_tpcb_like: Option<f64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// One of the targets, judged on this report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// `null` when the report lacks the runs to judge it.
    pub passed: Option<bool>,
    /// The figures behind the verdict.
    pub detail: String,
}

/// The whole report, as written to `report.json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Who wrote it.
    pub tool: &'static str,
    /// wallet-ledger's version.
    pub version: &'static str,
    /// `release` or `debug` (debug numbers are meaningless).
    pub build: &'static str,
    /// The command line.
    pub command: String,
    /// Start and end, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// End of the run.
    pub finished_unix_s: u64,
    /// The settings in force.
    pub config: BTreeMap<&'static str, serde_json::Value>,
    /// The machine.
    pub machine: BTreeMap<&'static str, serde_json::Value>,
    /// Server kind, version, settings.
    pub postgres: BTreeMap<&'static str, serde_json::Value>,
    /// pgbench's path and version, or why it is missing.
    pub pgbench: BTreeMap<&'static str, serde_json::Value>,
    /// Every measured point.
    pub runs: Vec<Run>,
    /// The targets.
    pub checks: Vec<Check>,
    /// Remarks (skipped references, failures).
    pub notes: Vec<String>,
}

/// Fills each run's ratios to the pgbench references at the same thread count (and workload,
/// for own-sql; tpcb-like does not depend on the workload).
pub fn fill_ratios(runs: &mut [Run]) {
    let reference = |runs: &[Run], mode: Mode, workload: Option<&str>, threads: usize| {
        runs.iter()
            .find(|r| r.mode == mode.name() && r.threads == threads && workload.map_or(true, |w| w == r.workload))
            .map(|r| r.tps)
            .filter(|&tps| tps > 0.0)
    };
    for i in 0..runs.len() {
        if runs[i].mode.starts_with("pgbench") {
            continue;
        }
        let (w, t, tps) = (runs[i].workload, runs[i].threads, runs[i].tps);
        runs[i].ratio_pgbench_own_sql = reference(runs, Mode::PgbenchOwnSql, Some(w), t).map(|r| tps / r);
        runs[i].ratio_pgbench_tpcb_like = reference(runs, Mode::PgbenchTpcbLike, None, t).map(|r| tps / r);
    }
}

/// Judges the targets.
pub fn checks(runs: &[Run]) -> Vec<Check> {
    let of = |mode: Mode| runs.iter().filter(move |r| r.mode == mode.name());
    let judged = |name: &str, ok: Option<bool>, detail: String| Check { name: name.into(), passed: ok, detail };
    let library: Vec<&Run> = of(Mode::Library).collect();
    let bad: Vec<String> = library
        .iter()
        .filter(|r| !library_clean(r))
        .map(|r| {
            format!(
                "{} at {} threads: {} deadlocks, {} errors, audit {:?}",
                r.workload, r.threads, r.deadlocks, r.errors, r.audit_clean
            )
        })
        .collect();
    let mut out = vec![judged(
        "library: zero deadlocks, zero errors and a clean audit in every run",
        (!library.is_empty()).then_some(bad.is_empty()),
        if bad.is_empty() { format!("{} runs", library.len()) } else { bad.join("; ") },
    )];
    let naive: Vec<&Run> = of(Mode::Naive).collect();
    let lost: Vec<String> = naive
        .iter()
        .filter(|r| r.money_created.as_deref().and_then(|m| Decimal::from_str(m).ok()).is_some_and(|d| !d.is_zero()))
        .map(|r| format!("{} at {} threads: {}", r.workload, r.threads, r.money_created.as_deref().unwrap_or("")))
        .collect();
    out.push(judged(
        "naive control: money created or lost",
        (!naive.is_empty()).then_some(!lost.is_empty()),
        lost.join("; "),
    ));
    let order: Vec<&Run> = of(Mode::RequestOrder).collect();
    let deadlocks: i64 = order.iter().map(|r| r.deadlocks).sum();
    out.push(judged(
        "request-order control: deadlocks",
        (!order.is_empty()).then_some(deadlocks > 0),
        format!("{deadlocks} deadlocks over {} runs", order.len()),
    ));
    out.extend(uniform16(runs));
    out
}

fn library_clean(r: &Run) -> bool {
    r.deadlocks == 0 && r.errors == 0 && r.audit_clean == Some(true)
}

/// The throughput targets at `uniform`, 16 threads.
fn uniform16(runs: &[Run]) -> Vec<Check> {
    let lib = runs.iter().find(|r| r.mode == Mode::Library.name() && r.workload == "uniform" && r.threads == 16);
    let target = |name: &str, ratio: Option<f64>, floor: f64| Check {
        name: name.into(),
        passed: ratio.map(|r| r >= floor),
        detail: ratio.map_or("not measured".into(), |r| format!("{r:.2}x (target {floor}x)")),
    };
    vec![
        target("uniform, 16 threads: library >= 0.9x pgbench-own-sql", lib.and_then(|r| r.ratio_pgbench_own_sql), 0.9),
        target(
            "uniform, 16 threads: library >= 1.5x pgbench-tpcb-like",
            lib.and_then(|r| r.ratio_pgbench_tpcb_like),
            1.5,
        ),
    ]
}

/// Whether the report shows a library failure (the bench then exits with an error).
pub fn library_failed(runs: &[Run]) -> bool {
    runs.iter().any(|r| r.mode == Mode::Library.name() && !library_clean(r))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The table printed on stdout (also the body of report.md).
pub fn table(runs: &[Run]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| {:<8} | {:<17} | {:>3} | {:>9} | {:>7} | {:>7} | {:>8} | {:>7} | {:>8} | {:>6} | {:>9} | {:<5} | {:>11} | {:>7} | {:>6} |",
        "workload", "mode", "thr", "tps", "p50 ms", "p99 ms", "max ms", "retries", "refusals", "errors", "deadlocks", "audit", "money", "x own", "x tpcb"
    );
    let _ = writeln!(t, "|{}|", ["-"; 15].map(|_| "---").join("|"));
    for r in runs {
        let _ = writeln!(
            t,
            "| {:<8} | {:<17} | {:>3} | {:>9.1} | {:>7} | {:>7} | {:>8} | {:>7} | {:>8} | {:>6} | {:>9} | {:<5} | {:>11} | {:>7} | {:>6} |",
            r.workload,
            r.mode,
            r.threads,
            r.tps,
            opt(r.p50_ms, 2),
            opt(r.p99_ms, 2),
            opt(r.max_ms, 1),
            r.retries.map_or("-".into(), |v| v.to_string()),
            r.refusals.map_or("-".into(), |v| v.to_string()),
            r.errors,
            r.deadlocks,
            r.audit_clean.map_or("-", |c| if c { "clean" } else { "BAD" }),
            r.money_created.as_deref().unwrap_or("-"),
            opt(r.ratio_pgbench_own_sql, 2),
            opt(r.ratio_pgbench_tpcb_like, 2),
        );
    }
    t
}

/// report.md: the command, the environment, the table, the checks and the plot.
pub fn markdown(report: &Report) -> String {
    let mut md = String::from("# wallet-ledger bench report\n\n");
    let _ = writeln!(md, "Command: `{}` ({} build)\n", report.command, report.build);
    let json = |v: &BTreeMap<&'static str, serde_json::Value>| {
        v.iter().map(|(k, v)| format!("- {k}: {}", plain(v))).collect::<Vec<_>>().join("\n")
    };
    let _ = writeln!(md, "## Machine\n\n{}\n", json(&report.machine));
    let _ = writeln!(md, "## PostgreSQL\n\n{}\n", json(&report.postgres));
    let _ = writeln!(md, "## pgbench\n\n{}\n", json(&report.pgbench));
    let _ = writeln!(md, "## Settings\n\n{}\n", json(&report.config));
    let _ = writeln!(md, "## Results\n\n![transfers/s against threads](throughput.svg)\n\n{}", table(&report.runs));
    let _ = writeln!(md, "## Checks\n");
    for c in &report.checks {
        let verdict = c.passed.map_or("not measured", |p| if p { "PASS" } else { "FAIL" });
        let _ = writeln!(md, "- **{verdict}** {}: {}", c.name, c.detail);
    }
    if !report.notes.is_empty() {
        let _ = writeln!(
            md,
            "\n## Notes\n\n{}",
            report.notes.iter().map(|n| format!("- {n}")).collect::<Vec<_>>().join("\n")
        );
    }
    md
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => {
            map.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// Writes report.json, report.md and throughput.svg into `out`.
pub fn write(report: &Report, out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("create report folder {}", out.display()))?;
    let json = serde_json::to_string_pretty(report).context("serialize report")?;
    fs::write(out.join("report.json"), json + "\n").with_context(|| format!("write {}/report.json", out.display()))?;
    fs::write(out.join("report.md"), markdown(report)).with_context(|| format!("write {}/report.md", out.display()))?;
    super::plot::draw(&report.runs, &out.join("throughput.svg"))
}

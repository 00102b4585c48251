//! The pgbench references: `-b tpcb-like`, and a custom script sending the library's own
//! transfer statement. Latencies come from pgbench's per-transaction log (`-l`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::driver::Pairs;
use super::hist::Histogram;
use super::progress::Progress;

/// The library's transfer statement (sql/queries/transfer.sql) as a pgbench script: the same
/// function with the same arguments; the pair is drawn like the Rust clients draw it, and the
/// internal idempotency key (`'~'` and a time-ordered version-7 UUID, made client side by the
/// library) is made by the server the same way: a random UUID whose first 48 bits are replaced by
/// the Unix time in milliseconds and whose version nibble is set to 7 (PostgreSQL 15 has no
/// `uuidv7()`), so every call inserts a fresh key at the same place in the key index as the
/// library's do.
pub const OWN_SQL_SCRIPT: &str = r"\set a random(0, :pool - 1)
\set b random(0, :pool - 2)
\set from :first + :a
\set to :first + case when :b >= :a then :b + 1 else :b end
SELECT outcome, transfer_id, from_balance, to_balance, account, available,
       from_currency, to_currency, currency_scale
  FROM wallet_ledger.transfer(:from, :to, 1.00,
       '~' || encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                 placing substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                 FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid,
       NULL, 0::smallint, 0);
";

/// pgbench, where it was found, and its version line.
#[derive(Debug, Clone)]
pub struct Pgbench {
    /// The executable.
    pub path: PathBuf,
    /// `pgbench --version`.
    pub version: String,
    /// Scratch directory for scripts, output and logs.
    work: PathBuf,
}

/// What one pgbench run reported.
pub struct PgbenchRun {
    /// Transactions per second, without connection time.
    pub tps: f64,
    /// Transactions processed.
    pub processed: u64,
    /// Transactions that failed (PostgreSQL 15+ reports them).
    pub failed: u64,
    /// Latencies from the per-transaction log.
    pub latency: Histogram,
}

impl Pgbench {
    /// Finds pgbench: next to the embedded server's binaries, else in PG_BIN, PATH or
    /// /usr/lib/postgresql/*/bin (newest first). `Err` says where it looked.
    pub fn find(embedded_bin: Option<&Path>) -> Result<Pgbench> {
        let path = candidates(embedded_bin)
            .into_iter()
            .find(|p| p.is_file())
            .context("pgbench not found next to the server binaries, in PG_BIN, PATH or /usr/lib/postgresql/*/bin")?;
        let out = Command::new(&path).arg("--version").output().with_context(|| format!("run {}", path.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let work = std::env::temp_dir().join(format!("wallet-ledger-bench-{}", std::process::id()));
        fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        Ok(Pgbench { path, version, work })
    }

    /// `pgbench -i` for tpcb-like at `scale`, server-side data generation.
    pub fn init_tpcb(&self, conninfo: &str, scale: u32) -> Result<()> {
        let args = ["-i", "-q", "-I", "dtGvp", "-s", &scale.to_string(), conninfo];
        let status = Command::new(&self.path)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("run pgbench -i")?;
        if !status.status.success() {
            bail!("pgbench -i -s {scale} failed: {}", last_lines(&String::from_utf8_lossy(&status.stderr)));
        }
        Ok(())
    }

    /// `pgbench -b tpcb-like` (with its usual vacuum first) at `clients` for `seconds`.
    pub fn tpcb_like(&self, conninfo: &str, clients: usize, seconds: u64, progress: &Progress) -> Result<PgbenchRun> {
        self.run(&["-b", "tpcb-like"], conninfo, clients, seconds, progress)
    }

    /// The library's own statement over `pairs` at `clients` for `seconds`.
    pub fn own_sql(
        &self,
        conninfo: &str,
        pairs: Pairs,
        clients: usize,
        seconds: u64,
        progress: &Progress,
    ) -> Result<PgbenchRun> {
        let script = self.work.join("own_sql.pgbench");
        fs::write(&script, OWN_SQL_SCRIPT).with_context(|| format!("write {}", script.display()))?;
        let (first, pool) = (format!("first={}", pairs.first), format!("pool={}", pairs.pool));
        let script = script.to_string_lossy().into_owned();
        self.run(&["-n", "-f", &script, "-D", &first, "-D", &pool], conninfo, clients, seconds, progress)
    }

    /// Runs pgbench in prepared mode, one thread per client, logging every transaction.
    fn run(
        &self,
        extra: &[&str],
        conninfo: &str,
        clients: usize,
        seconds: u64,
        progress: &Progress,
    ) -> Result<PgbenchRun> {
        let logs = self.work.join("log");
        let _ = fs::remove_dir_all(&logs);
        fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        let (stdout, stderr) = (self.work.join("stdout"), self.work.join("stderr"));
        let (c, t) = (clients.to_string(), seconds.to_string());
        let prefix = format!("--log-prefix={}", logs.join("tx").display());
        let mut args = vec!["-M", "prepared", "-c", &c, "-j", &c, "-T", &t, "-l", &prefix];
        args.extend_from_slice(extra);
        args.push(conninfo);
        let mut child = Command::new(&self.path)
            .args(&args)
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("run {}", self.path.display()))?;
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            progress.tick(start.elapsed());
            sleep(Duration::from_millis(100));
        };
        let out = fs::read_to_string(&stdout).unwrap_or_default();
        let err = fs::read_to_string(&stderr).unwrap_or_default();
        if !status.success() {
            bail!("pgbench {} failed ({status}): {}", extra.join(" "), last_lines(&format!("{err}\n{out}")));
        }
        let mut run =
            parse_summary(&out).with_context(|| format!("unexpected pgbench output: {}", last_lines(&out)))?;
        run.latency = read_logs(&logs)?;
        Ok(run)
    }
}

impl Drop for Pgbench {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.work);
    }
}

fn candidates(embedded_bin: Option<&Path>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = embedded_bin.map(|b| b.join("pgbench")).into_iter().collect();
    out.extend(std::env::var_os("PG_BIN").map(|b| PathBuf::from(b).join("pgbench")));
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path).map(|d| d.join("pgbench")));
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin").join("pgbench"))))
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    out.extend(versioned.into_iter().map(|(_, p)| p));
    out
}

/// tps (without connection time), processed and failed transactions from pgbench's summary.
fn parse_summary(out: &str) -> Option<PgbenchRun> {
    let tps_line = out
        .lines()
        .find(|l| l.starts_with("tps = ") && (l.contains("without initial") || l.contains("excluding")))
        .or_else(|| out.lines().find(|l| l.starts_with("tps = ")))?;
    let tps = tps_line.trim_start_matches("tps = ").split_whitespace().next()?.parse().ok()?;
    let number = |label: &str| -> Option<u64> {
        let rest = out.lines().find_map(|l| l.strip_prefix(label))?;
        rest.trim().split(['/', ' ']).next()?.parse().ok()
    };
    let processed = number("number of transactions actually processed:")?;
    let failed = number("number of failed transactions:").unwrap_or(0);
    Some(PgbenchRun { tps, processed, failed, latency: Histogram::default() })
}

/// Latencies from pgbench's per-transaction logs (`client tx latency_us script epoch us ...`).
fn read_logs(dir: &Path) -> Result<Histogram> {
    let mut latency = Histogram::default();
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let file = fs::File::open(&path).with_context(|| format!("read {}", path.display()))?;
        for line in BufReader::new(file).lines() {
            let line = line.with_context(|| format!("read {}", path.display()))?;
            if let Some(us) = line.split_whitespace().nth(2).and_then(|f| f.parse::<u64>().ok()) {
                latency.record_ns(us.saturating_mul(1000));
            }
        }
        let _ = fs::remove_file(&path);
    }
    Ok(latency)
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pg15_summary() {
        let out = "transaction type: tpcb-like\nnumber of transactions actually processed: 1234\n\
                   number of failed transactions: 2 (0.162%)\nlatency average = 1.2 ms\n\
                   initial connection time = 3.1 ms\ntps = 617.123456 (without initial connection time)\n";
        let run = parse_summary(out).unwrap();
        assert_eq!((run.processed, run.failed), (1234, 2));
        assert!((run.tps - 617.123456).abs() < 1e-9);
    }
}

//! The PostgreSQL server the bench runs on: a throwaway embedded one, or `--database-url`.
//! One fresh database per measured point (a copy of a prepared template), the server's own
//! counters per database, and the settings that go into the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use postgres::{Client, NoTls};
use wallet_ledger::Decimal;
use wallet_ledger_embedded::embedded::{with_dbname, EmbeddedServer};

use crate::Target;

/// The server, and a maintenance connection to it that never touches the measured databases.
pub struct Server {
    embedded: Option<EmbeddedServer>,
    admin_url: String,
    admin: Client,
    /// Prefix of every database the bench creates (`wlb_<pid>_`), so runs never clash.
    prefix: String,
    /// Whether `CHECKPOINT` is allowed (superuser or pg_checkpoint); tried before each point.
    pub can_checkpoint: bool,
    /// Pause between two reads of the counters that must agree (see [`Server::settled_stats`]).
    settle_every: Duration,
}

/// The server's per-database counters (pg_stat_database).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Deadlocks the server detected.
    pub deadlocks: i64,
    /// Transactions rolled back (each failed attempt of a transfer is one).
    pub rollbacks: i64,
}

impl Server {
    /// Starts a throwaway embedded server, or connects to `--database-url`. Never the
    /// persistent `--data-dir` server: the bench creates and drops many databases.
    pub fn start(target: &Target) -> Result<Server> {
        let (embedded, admin_url) = match &target.database_url {
            Some(url) => (None, url.clone()),
            None => {
                let server = EmbeddedServer::start().context("start a throwaway embedded PostgreSQL")?;
                let url = server.url("postgres");
                (Some(server), url)
            }
        };
        let mut admin = Client::connect(&admin_url, NoTls).context("connect to the bench's PostgreSQL server")?;
        let can_checkpoint = admin.batch_execute("CHECKPOINT").is_ok();
        let prefix = format!("wlb_{}_", std::process::id());
        let version: i32 = admin
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .context("read the server version")?
            .get(0);
        // From PostgreSQL 15 a backend flushes its statistics to shared memory before it leaves
        // pg_stat_activity, so a short re-check suffices; before, a collector process received
        // them up to 500 ms later.
        let settle_every = Duration::from_millis(if version >= 150_000 { 50 } else { 150 });
        Ok(Server { embedded, admin_url, admin, prefix, can_checkpoint, settle_every })
    }

    /// Whether this is the embedded server.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The embedded server's binary directory (where pgbench is).
    pub fn bin_dir(&self) -> Option<PathBuf> {
        self.embedded.as_ref().map(|s| s.bin_dir().to_path_buf())
    }

    /// The connection string of the maintenance database (for the lock sampler).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The full name of the bench's database `short`.
    pub fn db_name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// The connection string of database `name` (also what pgbench gets as its dbname).
    pub fn url(&self, name: &str) -> String {
        with_dbname(&self.admin_url, name)
    }

    /// Creates database `name`, empty or as a copy of `template`, and returns its URL.
    pub fn create(&mut self, name: &str, template: Option<&str>) -> Result<String> {
        self.drop_db(name)?;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
            None => format!("CREATE DATABASE {name}"),
        };
        self.admin
            .batch_execute(&sql)
            .with_context(|| format!("{sql} (the bench needs CREATEDB to give every point a fresh database)"))?;
        Ok(self.url(name))
    }

    /// Drops database `name` if it exists, closing any connection left on it.
    pub fn drop_db(&mut self, name: &str) -> Result<()> {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        self.admin.batch_execute(&sql).with_context(|| sql.clone())
    }

    /// Flushes dirty buffers before a point, so that no point pays for the previous one's
    /// checkpoint. Does nothing without the privilege.
    pub fn checkpoint(&mut self) {
        if self.can_checkpoint {
            let _ = self.admin.batch_execute("CHECKPOINT");
        }
    }

    /// The counters of database `name` once every connection to it has closed and its
    /// statistics have been flushed (backends flush them on exit, asynchronously).
    pub fn settled_stats(&mut self, name: &str) -> Result<DbStats> {
        self.wait_idle(name)?;
        let mut last = self.stats(name)?;
        for _ in 0..20 {
            sleep(self.settle_every);
            let now = self.stats(name)?;
            if now == last {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }

    /// The counters of database `name` now.
    pub fn stats(&mut self, name: &str) -> Result<DbStats> {
        let row = self
            .admin
            .query_one(
                "SELECT coalesce(deadlocks, 0), coalesce(xact_rollback, 0) FROM pg_stat_database WHERE datname = $1",
                &[&name],
            )
            .with_context(|| format!("read pg_stat_database for {name}"))?;
        Ok(DbStats { deadlocks: row.get(0), rollbacks: row.get(1) })
    }

    /// Waits until no backend is connected to database `name` (at most 30 s).
    pub fn wait_idle(&mut self, name: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let row = self.admin.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )?;
            if row.get::<_, i64>(0) == 0 {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("connections to {name} did not close within 30 s");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The server version and the settings that shape the numbers.
    pub fn settings(&mut self) -> Result<(String, BTreeMap<String, String>)> {
        let version: String = self.admin.query_one("SELECT version()", &[])?.get(0);
        let rows = self.admin.query(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1) ORDER BY name",
            &[&REPORTED_SETTINGS.to_vec()],
        )?;
        Ok((version, rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    /// Where the embedded server lives, for messages.
    pub fn describe(&self) -> String {
        match &self.embedded {
            Some(s) => format!("embedded PostgreSQL in {}", s.dir().display()),
            None => "the server at --database-url".to_string(),
        }
    }
}

/// Settings recorded in the report.
const REPORTED_SETTINGS: [&str; 20] = [
    "server_version",
    "max_connections",
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "wal_sync_method",
    "wal_buffers",
    "wal_writer_delay",
    "commit_delay",
    "commit_siblings",
    "checkpoint_timeout",
    "max_wal_size",
    "deadlock_timeout",
    "default_transaction_isolation",
    "jit",
    "huge_pages",
];

/// Per currency, the sum of all balances: zero in a sound ledger; otherwise money was created
/// (positive) or lost (negative). Returns the total over currencies.
pub fn money_created(client: &mut Client) -> Result<Decimal> {
    let rows = client
        .query("SELECT coalesce(sum(balance), 0) FROM wallet_ledger.accounts GROUP BY currency", &[])
        .context("sum balances")?;
    Ok(rows.iter().map(|r| r.get::<_, Decimal>(0)).sum())
}

/// How many transfers the ledger holds.
pub fn transfer_count(client: &mut Client) -> Result<i64> {
    Ok(client.query_one("SELECT count(*) FROM wallet_ledger.transfers", &[]).context("count transfers")?.get(0))
}

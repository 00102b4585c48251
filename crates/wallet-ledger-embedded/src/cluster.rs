//! Faults on embedded servers, for `wallet-ledger torture` and the test suite: a crash
//! (`pg_ctl stop -m immediate`: no shutdown checkpoint, WAL replay on the next start) and a
//! restart on the same data directory and socket, a streaming standby made with
//! `pg_basebackup -R` that the primary waits for (`synchronous_standby_names`), promotion, and
//! signals to server processes (pausing a backend with `SIGSTOP`, resuming it with `SIGCONT`).
//!
//! Every server here is a throwaway [`EmbeddedServer`]: its directory and processes go away
//! when the value is dropped, or when this process dies.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::embedded::{EmbeddedError, EmbeddedServer};

/// A signal for [`EmbeddedServer::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Pause the process (it cannot be caught: the process keeps whatever it holds).
    Stop,
    /// Resume a paused process.
    Cont,
}

impl EmbeddedServer {
    /// Crashes the server: `pg_ctl stop -m immediate`. Backends are killed without finishing
    /// their work and without a checkpoint; the next start replays the WAL.
    ///
    /// # Errors
    /// When `pg_ctl` fails (the server was not running, for instance).
    pub fn crash(&self) -> Result<(), EmbeddedError> {
        let data = self.data_path();
        self.run_program("pg_ctl", &["-D", path_str(&data), "-m", "immediate", "-w", "stop"])
    }

    /// Starts the server again on its data directory and socket after [`crash`](Self::crash),
    /// returning once it accepts connections (crash recovery included).
    ///
    /// # Errors
    /// When the server does not start; the error carries the end of its log.
    pub fn restart(&self) -> Result<(), EmbeddedError> {
        self.start_existing()
    }

    /// Creates a streaming standby of this server in a new throwaway directory with
    /// `pg_basebackup -R` (which writes `primary_conninfo` and `standby.signal`), listening on its
    /// own socket directory with the same port number, and starts it. It is asynchronous until
    /// [`require_synchronous_standby`](Self::require_synchronous_standby) is called on this server.
    ///
    /// # Errors
    /// When the base backup or the start fails.
    pub fn start_standby(&self) -> Result<EmbeddedServer, EmbeddedError> {
        let standby = EmbeddedServer::empty_throwaway()?;
        let data = standby.data_path();
        let primary_socket = path_str(self.socket_dir()).to_string();
        let port = self.port().to_string();
        let args = [
            "-D",
            path_str(&data),
            "-h",
            &primary_socket,
            "-p",
            &port,
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ];
        standby.run_program("pg_basebackup", &args)?;
        // The copied postgresql.conf points at the primary's socket directory; a later line wins.
        // After a crash of the primary the standby reconnects within 200 ms, not the default 5 s:
        // until it does, every commit on the synchronous primary waits.
        let own = format!(
            "\n# standby of {primary_socket}\nunix_socket_directories = '{}'\nhot_standby = on\nwal_retrieve_retry_interval = 200ms\n",
            standby.socket_dir().display()
        );
        append(&data.join("postgresql.conf"), &own)?;
        standby.start_existing()?;
        Ok(standby)
    }

    /// Makes every commit on this server wait until a standby has flushed it
    /// (`synchronous_standby_names = '*'`, `synchronous_commit = on`), and waits up to `timeout`
    /// until a standby streams as synchronous.
    ///
    /// # Errors
    /// Database errors, or no synchronous standby within `timeout`.
    pub fn require_synchronous_standby(&self, timeout: Duration) -> Result<(), EmbeddedError> {
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        // One statement per call: ALTER SYSTEM cannot run in the implicit transaction of a batch.
        client.batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")?;
        client.batch_execute("ALTER SYSTEM SET synchronous_commit = 'on'")?;
        client.batch_execute("SELECT pg_reload_conf()")?;
        let started = Instant::now();
        loop {
            let sync: i64 =
                client.query_one("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", &[])?.get(0);
            if sync > 0 {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(EmbeddedError::Command {
                    program: "synchronous standby".into(),
                    status: "timed out".into(),
                    output: format!("no standby streamed synchronously within {timeout:?}"),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Promotes this standby to a primary (`pg_ctl promote -w`): it returns once the server
    /// accepts writes.
    ///
    /// # Errors
    /// When `pg_ctl` fails (not a standby, not running).
    pub fn promote(&self) -> Result<(), EmbeddedError> {
        let data = self.data_path();
        self.run_program("pg_ctl", &["-D", path_str(&data), "-w", "-t", "60", "promote"])
    }

    /// Sends `signal` to process `pid` of this server (a backend's `pg_stat_activity.pid`), as
    /// the server's user: this works when this process runs as that user or as root.
    ///
    /// # Errors
    /// When the signal cannot be sent (no such process, not permitted).
    pub fn signal(&self, pid: i32, signal: Signal) -> Result<(), EmbeddedError> {
        let name = match signal {
            Signal::Stop => "-STOP",
            Signal::Cont => "-CONT",
        };
        let output = self
            .command_as_owner("kill")
            .args([name, &pid.to_string()])
            .output()
            .map_err(|source| EmbeddedError::Io { context: "run kill".into(), source })?;
        if output.status.success() {
            return Ok(());
        }
        Err(EmbeddedError::Command {
            program: "kill".into(),
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }

    /// The server log's path (`server.log` in the server's directory).
    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir().join("server.log")
    }
}

/// One connection string for several servers (a primary and its standbys): the client tries
/// them in order and keeps the first that accepts writes (`target_session_attrs=read-write`),
/// so after a failover new connections reach the promoted standby.
pub fn multi_host_url(servers: &[&EmbeddedServer], dbname: &str) -> String {
    let hosts: Vec<String> = servers.iter().map(|s| s.socket_dir().display().to_string()).collect();
    let port = servers.first().map_or(5432, |s| s.port());
    format!(
        "host={} port={port} user=postgres dbname={dbname} target_session_attrs=read-write connect_timeout=5",
        hosts.join(",")
    )
}

fn append(path: &Path, text: &str) -> Result<(), EmbeddedError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|source| EmbeddedError::Io { context: format!("open {}", path.display()), source })?;
    file.write_all(text.as_bytes())
        .map_err(|source| EmbeddedError::Io { context: format!("write {}", path.display()), source })
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("embedded server paths are built from UTF-8 parts")
}

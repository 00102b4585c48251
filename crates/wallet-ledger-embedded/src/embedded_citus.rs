//! A local Citus cluster (distributed PostgreSQL) for tests, examples and the bench: a
//! coordinator and worker nodes started from the machine's PostgreSQL binaries with the Citus
//! extension preloaded, each an [`EmbeddedServer`] in its own temporary directory.
//!
//! - [`CitusCluster::start`]: a throwaway cluster: the servers listen only on Unix sockets inside
//!   their directories (no TCP port; the nodes reach each other through the socket directories,
//!   which `citus_add_node` accepts as host names), run as an unprivileged user when this process
//!   is root, and are stopped and removed on drop or by their watchdogs if this process dies.
//! - [`citus_database`]: a database with Citus ready (the extension on every node, the workers
//!   registered) for a test: the coordinator at `DATABASE_URL_CITUS` when it is set, otherwise a
//!   database on one embedded cluster shared by the whole process.
//! - [`citus_installed`]: whether the machine can run the embedded cluster at all, and why not.
//!
//! Citus itself is not part of PostgreSQL's Debian packages; see `docs/citus.md` for installing
//! it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::embedded::{binaries, EmbeddedError, EmbeddedServer};

/// Why a Citus cluster could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CitusError {
    /// The Citus extension is not installed for the machine's PostgreSQL.
    #[error("Citus is not installed for the PostgreSQL in {bin}: no {library} (build and install it, e.g. with shared/citus/install.sh as root, or set DATABASE_URL_CITUS to a Citus coordinator)")]
    NotInstalled {
        /// The PostgreSQL binary directory looked at.
        bin: String,
        /// The library file that is missing.
        library: String,
    },
    /// A node could not be created or started.
    #[error("embedded Citus node")]
    Embedded(#[from] EmbeddedError),
    /// A statement setting up the cluster failed.
    #[error("Citus cluster setup")]
    Database(#[from] postgres::Error),
    /// The process-wide cluster failed to start earlier.
    #[error("the shared embedded Citus cluster did not start: {0}")]
    SharedFailed(String),
}

/// Settings of every node: Citus preloaded, room for two-phase commit and for the connections
/// the coordinator opens to the workers. `deadlock_timeout` stays at the embedded server's
/// 100 ms, so Citus's distributed deadlock detector (`2 x deadlock_timeout` by default) runs
/// every 200 ms. Durability stays on.
const NODE_SETTINGS: &str = "
shared_preload_libraries = 'citus'
shared_buffers = 128MB
max_connections = 300
max_prepared_transactions = 300
";

/// Shards per distributed table on the embedded cluster (Citus's default is 32): enough to
/// spread accounts over both workers, few enough that the audit's all-shard queries stay quick.
pub const EMBEDDED_SHARD_COUNT: u32 = 8;

/// Checks that the machine's PostgreSQL has the Citus extension installed.
///
/// # Errors
/// [`CitusError::NotInstalled`] saying where it looked; [`CitusError::Embedded`] when
/// PostgreSQL itself is missing.
pub fn citus_installed() -> Result<(), CitusError> {
    let bin = binaries()?;
    let libdir = Command::new(bin.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| bin.parent().map(|p| p.join("lib")).unwrap_or_default());
    let library = libdir.join("citus.so");
    if library.is_file() {
        Ok(())
    } else {
        Err(CitusError::NotInstalled { bin: bin.display().to_string(), library: library.display().to_string() })
    }
}

/// A throwaway Citus cluster on this machine: one coordinator and some workers.
#[derive(Debug)]
pub struct CitusCluster {
    coordinator: EmbeddedServer,
    workers: Vec<EmbeddedServer>,
}

impl CitusCluster {
    /// Starts a coordinator and `workers` workers (in parallel), each a throwaway embedded server
    /// with Citus preloaded. Databases are added with [`create_database`](Self::create_database).
    ///
    /// # Errors
    /// [`CitusError::NotInstalled`] without Citus; otherwise the node that failed.
    pub fn start(workers: usize) -> Result<CitusCluster, CitusError> {
        citus_installed()?;
        let coordinator_conf = format!("{NODE_SETTINGS}citus.shard_count = {EMBEDDED_SHARD_COUNT}\n");
        let (coordinator, workers) = std::thread::scope(|scope| {
            let coordinator = scope.spawn(|| EmbeddedServer::start_with_conf(&coordinator_conf));
            let handles: Vec<_> =
                (0..workers).map(|_| scope.spawn(|| EmbeddedServer::start_with_conf(NODE_SETTINGS))).collect();
            let workers: Vec<_> = handles.into_iter().map(|h| h.join().expect("node start panicked")).collect();
            (coordinator.join().expect("node start panicked"), workers)
        });
        let workers = workers.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(CitusCluster { coordinator: coordinator?, workers })
    }

    /// The coordinator: the node clients connect to.
    pub fn coordinator(&self) -> &EmbeddedServer {
        &self.coordinator
    }

    /// The workers: the nodes holding the shards.
    pub fn workers(&self) -> &[EmbeddedServer] {
        &self.workers
    }

    /// Creates database `name` on every node with the Citus extension, registers the coordinator
    /// and the workers in it (by their socket directories), and returns the coordinator's
    /// connection string for it. Idempotent.
    ///
    /// # Errors
    /// For a name that is not `[a-z0-9_]{1,63}`, and database errors.
    pub fn create_database(&self, name: &str) -> Result<String, CitusError> {
        for worker in &self.workers {
            let url = worker.create_database(name)?;
            let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
            client.batch_execute("CREATE EXTENSION IF NOT EXISTS citus")?;
        }
        let url = self.coordinator.create_database(name)?;
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.batch_execute("CREATE EXTENSION IF NOT EXISTS citus")?;
        let (host, port) = node_address(&self.coordinator);
        client.execute("SELECT citus_set_coordinator_host($1, $2)", &[&host, &port])?;
        for worker in &self.workers {
            let (host, port) = node_address(worker);
            let known = client
                .query_opt("SELECT 1 FROM pg_dist_node WHERE nodename = $1 AND nodeport = $2", &[&host, &port])?
                .is_some();
            if !known {
                client.execute("SELECT citus_add_node($1, $2)", &[&host, &port])?;
            }
        }
        Ok(url)
    }
}

/// A node's address as Citus stores it: the socket directory as host, and the port.
fn node_address(server: &EmbeddedServer) -> (String, i32) {
    (path_text(server.socket_dir()), i32::from(server.port()))
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// A database with Citus ready, for tests: the coordinator at `DATABASE_URL_CITUS` when it is
/// set (its database must have the extension and its workers already), otherwise database
/// `wl_citus` on an embedded cluster of a coordinator and two workers, started on first use and
/// shared by the whole process. Tests give each case its own schema in it.
///
/// # Errors
/// [`CitusError::NotInstalled`] when there is no `DATABASE_URL_CITUS` and no Citus on this
/// machine; otherwise what failed while starting the cluster.
pub fn citus_database() -> Result<String, CitusError> {
    if let Ok(url) = std::env::var("DATABASE_URL_CITUS") {
        if !url.is_empty() {
            return Ok(url);
        }
    }
    static DATABASE: OnceLock<Result<String, String>> = OnceLock::new();
    let made = DATABASE.get_or_init(|| {
        let cluster = shared_cluster().map_err(|e| crate::error::chain(&e))?;
        cluster.create_database("wl_citus").map_err(|e| crate::error::chain(&e))
    });
    made.clone().map_err(CitusError::SharedFailed)
}

/// The process-wide embedded cluster behind [`citus_database`] (a coordinator and two workers),
/// started on first use and removed when the process exits.
///
/// # Errors
/// As [`CitusCluster::start`]; the error repeats on every call once start failed.
pub fn shared_cluster() -> Result<&'static CitusCluster, CitusError> {
    static CLUSTER: OnceLock<Result<CitusCluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(|| CitusCluster::start(2).map_err(|e| crate::error::chain(&e))) {
        Ok(cluster) => Ok(cluster),
        Err(message) => Err(CitusError::SharedFailed(message.clone())),
    }
}

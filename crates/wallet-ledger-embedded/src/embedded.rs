//! A local PostgreSQL server for tests, examples, benchmarks and the command-line tool, started
//! from the machine's own PostgreSQL binaries, so that nothing has to be set up by hand.
//!
//! - [`EmbeddedServer::start`]: a throwaway cluster in a temporary directory, listening only on
//!   a Unix socket inside it (parallel test binaries never clash on a port), stopped and removed
//!   on drop, and by a watchdog process if this process dies without dropping it.
//! - [`EmbeddedServer::open`]: a persistent cluster in a directory of your choice, created on
//!   first use and started on demand; left running on drop (stop it with [`EmbeddedServer::stop`]).
//! - [`TestDatabase`]: a new, empty database for one test: on `DATABASE_URL` when it is set
//!   (and dropped there afterwards), otherwise on one embedded server shared by the whole
//!   process. [`fresh_database`] makes the same database but leaves it behind.
//!
//! PostgreSQL refuses to run as root. When this process is root, the server's files and
//! processes belong to the `postgres` user if it exists, else to `nobody`.
//!
//! Binaries are looked for in `PG_BIN`, then `PATH`, then `/usr/lib/postgresql/*/bin` (newest
//! version first). When none is found the error says what to install.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Why an embedded server could not be created, started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// No PostgreSQL server binaries on this machine.
    #[error("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PG_BIN, PATH or /usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install -y postgresql) or set DATABASE_URL to an existing server")]
    BinariesNotFound,
    /// Running as root, but no unprivileged user to run the server as.
    #[error("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as (it refuses root): create one, or set DATABASE_URL")]
    NoUnprivilegedUser,
    /// A file system operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL program exited with an error.
    #[error("{program} failed ({status}): {output}")]
    Command {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The end of its output or of the server log.
        output: String,
    },
    /// The server started but a statement on it failed.
    #[error("embedded server database error")]
    Database(#[from] postgres::Error),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

/// The port number in socket file names (`.s.PGSQL.5432`); nothing listens on TCP unless
/// the server was started with [`EmbeddedServer::start_tls`].
const PORT: u16 = 5432;

/// Server settings for the embedded cluster. Durability stays on (fsync, synchronous_commit):
/// benchmarks on it must measure what production would pay. `deadlock_timeout` is lowered so
/// that the deliberately deadlocking controls of the test suite are detected quickly.
const SETTINGS: &str = "
listen_addresses = ''
max_connections = 250
shared_buffers = 256MB
deadlock_timeout = 100ms
max_prepared_transactions = 64
log_min_messages = warning
log_min_error_statement = panic
";

/// A local PostgreSQL cluster (see the module docs).
#[derive(Debug)]
pub struct EmbeddedServer {
    dir: PathBuf,
    bin: PathBuf,
    /// The socket's port number; also the TCP port when the server listens on TCP.
    port: u16,
    /// Whether the server also listens on 127.0.0.1 (TCP), with TLS required there.
    tcp_tls: bool,
    owner: Option<Owner>,
    /// `Some` for a throwaway cluster: closing its stdin makes the watchdog stop the server and
    /// remove the directory.
    watchdog: Option<(Child, ChildStdin)>,
}

/// The unprivileged user the server runs as when this process is root.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

impl EmbeddedServer {
    /// Creates and starts a throwaway cluster in a new temporary directory.
    ///
    /// # Errors
    /// [`EmbeddedError::BinariesNotFound`] when PostgreSQL is not installed; otherwise the
    /// failing step with the end of its output.
    pub fn start() -> Result<EmbeddedServer, EmbeddedError> {
        EmbeddedServer::start_throwaway(None)
    }

    /// [`start`](EmbeddedServer::start), and also listen on `127.0.0.1` at a free TCP port
    /// ([`tcp_url`](EmbeddedServer::tcp_url)) with `ssl = on`, serving the PEM certificate
    /// `cert_pem` with its private key `key_pem`. TCP connections must use TLS (`hostssl`;
    /// plain ones are rejected); the Unix socket stays plain. For testing TLS clients.
    ///
    /// # Errors
    /// As [`start`](EmbeddedServer::start); the server refuses to start on an unusable
    /// certificate or key.
    pub fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> Result<EmbeddedServer, EmbeddedError> {
        EmbeddedServer::start_throwaway(Some((cert_pem, key_pem)))
    }

    fn start_throwaway(tls: Option<(&[u8], &[u8])>) -> Result<EmbeddedServer, EmbeddedError> {
        let bin = find_binaries()?;
        let owner = unprivileged_owner()?;
        let dir = make_temp_dir()?;
        let port = if tls.is_some() { free_tcp_port()? } else { PORT };
        let mut server = EmbeddedServer { dir, bin, port, tcp_tls: tls.is_some(), owner, watchdog: None };
        if let Some(o) = owner {
            std::os::unix::fs::chown(&server.dir, Some(o.uid), Some(o.gid)).map_err(io_err("chown temp dir"))?;
        }
        server.watchdog = Some(server.spawn_watchdog()?);
        server.init()?;
        if let Some((cert, key)) = tls {
            server.enable_tls(cert, key)?;
        }
        server.pg_ctl_start()?;
        Ok(server)
    }

    /// Opens the persistent cluster in `dir`: creates it on first use, starts it when it is not
    /// running. Dropping the value leaves the server running.
    ///
    /// # Errors
    /// As [`start`](EmbeddedServer::start); also when `dir` is not reachable by the server's user.
    pub fn open(dir: &Path) -> Result<EmbeddedServer, EmbeddedError> {
        let bin = find_binaries()?;
        let owner = unprivileged_owner()?;
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let dir = fs::canonicalize(dir).map_err(io_err(format!("resolve {}", dir.display())))?;
        let server = EmbeddedServer { dir, bin, port: PORT, tcp_tls: false, owner, watchdog: None };
        if !server.data_dir().join("PG_VERSION").exists() {
            fs::set_permissions(&server.dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod data dir"))?;
            if let Some(o) = owner {
                std::os::unix::fs::chown(&server.dir, Some(o.uid), Some(o.gid)).map_err(io_err("chown data dir"))?;
            }
            server.init()?;
        }
        if !server.is_running() {
            server.pg_ctl_start()?;
        }
        Ok(server)
    }

    /// The persistent cluster in `dir` if [`open`](EmbeddedServer::open) created one there,
    /// running or not; `None` otherwise. Creates, starts and changes nothing (ask
    /// [`is_running`](EmbeddedServer::is_running)).
    ///
    /// # Errors
    /// [`EmbeddedError::BinariesNotFound`] when PostgreSQL is not installed; when `dir` cannot
    /// be resolved.
    pub fn existing(dir: &Path) -> Result<Option<EmbeddedServer>, EmbeddedError> {
        if !dir.join("data").join("PG_VERSION").exists() {
            return Ok(None);
        }
        let bin = find_binaries()?;
        let owner = unprivileged_owner()?;
        let dir = fs::canonicalize(dir).map_err(io_err(format!("resolve {}", dir.display())))?;
        Ok(Some(EmbeddedServer { dir, bin, port: PORT, tcp_tls: false, owner, watchdog: None }))
    }

    /// The directory holding the cluster and its socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the PostgreSQL binaries in use (where `pgbench` and `psql` are too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The directory of the Unix socket (pass it as `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The socket's port number (`-p` for pgbench and psql).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A key=value connection string for database `dbname` as the superuser `postgres`.
    pub fn url(&self, dbname: &str) -> String {
        format!("host={} port={} user=postgres dbname={dbname}", self.dir.display(), self.port)
    }

    /// For a server from [`start_tls`](EmbeddedServer::start_tls): a TCP connection string to
    /// `127.0.0.1` for database `dbname` as `postgres`, with `sslmode=require`. `None` for a
    /// server that listens on its Unix socket only.
    pub fn tcp_url(&self, dbname: &str) -> Option<String> {
        self.tcp_tls.then(|| format!("host=127.0.0.1 port={} user=postgres dbname={dbname} sslmode=require", self.port))
    }

    /// Creates database `name` (if it does not exist) and returns its connection string.
    ///
    /// # Errors
    /// [`EmbeddedError::Command`] for a name that is not `[a-z0-9_]{1,63}`; database errors.
    pub fn create_database(&self, name: &str) -> Result<String, EmbeddedError> {
        create_database_on(&self.url("postgres"), name)?;
        Ok(self.url(name))
    }

    /// Stops the server now (fast shutdown) and, for a throwaway cluster, removes its directory.
    pub fn stop(mut self) -> Result<(), EmbeddedError> {
        if self.watchdog.is_none() {
            let data = self.data_dir();
            self.run("pg_ctl", &["-D", path_str(&data), "-m", "fast", "-w", "stop"])?;
        }
        self.finish_watchdog();
        Ok(())
    }

    /// Whether a postmaster is running on this cluster.
    pub fn is_running(&self) -> bool {
        let data = self.data_dir();
        self.command("pg_ctl")
            .args(["-D", path_str(&data), "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init(&self) -> Result<(), EmbeddedError> {
        let data = self.data_dir();
        let args = [
            "-D",
            path_str(&data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ];
        self.run("initdb", &args)?;
        let socket = format!("unix_socket_directories = '{}'\nport = {}\n", self.dir.display(), self.port);
        let conf = data.join("postgresql.conf");
        let mut file = fs::OpenOptions::new().append(true).open(&conf).map_err(io_err("open postgresql.conf"))?;
        file.write_all(SETTINGS.as_bytes())
            .and_then(|_| file.write_all(socket.as_bytes()))
            .map_err(io_err("write postgresql.conf"))
    }

    /// Writes the certificate and key (owned by the server's user, key mode 0600), turns TLS on
    /// and lets TCP clients on 127.0.0.1 in with TLS only.
    fn enable_tls(&self, cert: &[u8], key: &[u8]) -> Result<(), EmbeddedError> {
        let data = self.data_dir();
        for (name, pem) in [("server.crt", cert), ("server.key", key)] {
            let path = data.join(name);
            fs::write(&path, pem).map_err(io_err(format!("write {name}")))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_err(format!("chmod {name}")))?;
            if let Some(o) = self.owner {
                std::os::unix::fs::chown(&path, Some(o.uid), Some(o.gid)).map_err(io_err(format!("chown {name}")))?;
            }
        }
        let conf =
            "listen_addresses = '127.0.0.1'\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
        let f = fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"));
        f.and_then(|mut f| f.write_all(conf.as_bytes())).map_err(io_err("write postgresql.conf"))?;
        // First match wins in pg_hba.conf: these lines go before initdb's `host ... trust` ones.
        let hba_path = data.join("pg_hba.conf");
        let initdb_rules = fs::read_to_string(&hba_path).map_err(io_err("read pg_hba.conf"))?;
        let hba = format!("hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n{initdb_rules}");
        fs::write(&hba_path, hba).map_err(io_err("write pg_hba.conf"))
    }

    fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let result = self.run("pg_ctl", &["-D", path_str(&data), "-l", path_str(&log), "-w", "-t", "60", "start"]);
        result.map_err(|e| match e {
            EmbeddedError::Command { program, status, .. } => {
                EmbeddedError::Command { program, status, output: tail(&log) }
            }
            other => other,
        })
    }

    /// A watchdog shell that waits for its stdin to close (this value dropped, or this process
    /// gone however it ended), then stops the server and removes the directory.
    fn spawn_watchdog(&self) -> Result<(Child, ChildStdin), EmbeddedError> {
        let script = r#"read _ignored; "$0" -D "$1/data" -m immediate -w stop >/dev/null 2>&1; rm -rf "$1""#;
        let pg_ctl = self.bin.join("pg_ctl");
        let mut child = self
            .command_raw("sh")
            .args(["-c", script, path_str(&pg_ctl), path_str(&self.dir)])
            // Its own process group: Ctrl-C in a terminal (SIGINT to the foreground group) or a
            // kill of this process's group must not take the watchdog down with this process.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("spawn watchdog"))?;
        let stdin = child.stdin.take().expect("stdin was piped");
        Ok((child, stdin))
    }

    fn finish_watchdog(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    fn command(&self, program: &str) -> Command {
        self.command_raw(path_str(&self.bin.join(program)))
    }

    fn command_raw(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.current_dir(&self.dir).env("LC_ALL", "C").env_remove("PGDATA");
        if let Some(o) = self.owner {
            command.uid(o.uid).gid(o.gid);
        }
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), EmbeddedError> {
        let output = self.command(program).args(args).output().map_err(io_err(format!("run {program}")))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        Err(EmbeddedError::Command {
            program: program.into(),
            status: output.status.to_string(),
            output: last_lines(&text, 12),
        })
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.finish_watchdog();
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now (the OS's choice; free again once the
/// probe socket closes, so a race with another process taking it is possible but unlikely).
fn free_tcp_port() -> Result<u16, EmbeddedError> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("find a free TCP port"))?;
    Ok(probe.local_addr().map_err(io_err("find a free TCP port"))?.port())
}

/// Creates database `name` through the maintenance connection `admin_url`, unless it exists.
fn create_database_on(admin_url: &str, name: &str) -> Result<(), EmbeddedError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(EmbeddedError::Command {
            program: "create database".into(),
            status: "refused".into(),
            output: format!("{name:?} is not [a-z0-9_]{{1,63}}"),
        });
    }
    let mut client = postgres::Client::connect(admin_url, postgres::NoTls)?;
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?.is_some();
    if !exists {
        // An identifier cannot be a bound parameter; `name` was checked to be [a-z0-9_] above.
        client.batch_execute(&format!("CREATE DATABASE {name}"))?;
    }
    Ok(())
}

/// A new empty database for one test, example or benchmark: on `DATABASE_URL` when it is set
/// (the role needs CREATEDB), otherwise on an embedded server shared by the whole process and
/// removed when the process exits. `prefix` makes the name readable (`[a-z0-9_]`).
///
/// The database is never dropped: on `DATABASE_URL`'s server it stays behind. Tests use
/// [`TestDatabase`], which drops it.
///
/// # Errors
/// As [`EmbeddedServer::start`], or when the database cannot be created.
pub fn fresh_database(prefix: &str) -> Result<String, EmbeddedError> {
    Ok(TestDatabase::new(prefix)?.keep())
}

/// A new database for one test, dropped with this value when it lives on a server the test does
/// not own.
///
/// - [`TestDatabase::new`]: on `DATABASE_URL` when it is set (the role needs CREATEDB), dropped
///   there on drop; otherwise on the process's embedded server ([`shared_server`]), where
///   nothing is dropped (the server's directory goes when the process exits).
/// - [`TestDatabase::on_server`]: on the server of a given maintenance connection string,
///   dropped there on drop.
///
/// The drop runs `DROP DATABASE ... WITH (FORCE)` (PostgreSQL 13+), ending any session still
/// on the database. It is best effort: a failure leaves the database behind and is not reported.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    /// The maintenance connection the database is dropped through; `None` to leave it.
    drop_through: Option<String>,
}

impl TestDatabase {
    /// A new, empty database on `DATABASE_URL`'s server or the process's embedded server;
    /// `prefix` makes its name readable (`[a-z0-9_]`, at most 32 characters are kept).
    ///
    /// # Errors
    /// As [`EmbeddedServer::start`], or when the database cannot be created.
    pub fn new(prefix: &str) -> Result<TestDatabase, EmbeddedError> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => TestDatabase::on_server(&url, prefix),
            _ => {
                let name = database_name(prefix);
                let url = shared_server()?.create_database(&name)?;
                Ok(TestDatabase { url, name, drop_through: None })
            }
        }
    }

    /// A new, empty database on the server `admin_url` connects to (any existing database
    /// there; the role needs CREATEDB), dropped through `admin_url` on drop.
    ///
    /// # Errors
    /// When the server cannot be reached or the database cannot be created.
    pub fn on_server(admin_url: &str, prefix: &str) -> Result<TestDatabase, EmbeddedError> {
        let name = database_name(prefix);
        create_database_on(admin_url, &name)?;
        let url = with_dbname(admin_url, &name);
        Ok(TestDatabase { url, name, drop_through: Some(admin_url.to_string()) })
    }

    /// Its connection string.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keeps the database after the value is dropped (to inspect a failing test); returns its
    /// connection string.
    pub fn keep(mut self) -> String {
        self.drop_through = None;
        std::mem::take(&mut self.url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(admin_url) = self.drop_through.take() else { return };
        if let Ok(mut client) = postgres::Client::connect(&admin_url, postgres::NoTls) {
            // An identifier cannot be a bound parameter; the name is [a-z0-9_] (database_name).
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
        }
    }
}

/// A database name unique in this process and among processes: `wl_<prefix>_<pid>_<n>`.
fn database_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("wl_{prefix}_{}_{n}", std::process::id())
}

/// The process-wide embedded server behind [`fresh_database`], started on first use.
///
/// # Errors
/// As [`EmbeddedServer::start`]; the error repeats on every call once start failed.
pub fn shared_server() -> Result<&'static EmbeddedServer, EmbeddedError> {
    static SERVER: OnceLock<Result<EmbeddedServer, String>> = OnceLock::new();
    match SERVER.get_or_init(|| EmbeddedServer::start().map_err(|e| crate::error::chain(&e))) {
        Ok(server) => Ok(server),
        Err(message) => Err(EmbeddedError::Command {
            program: "embedded server".into(),
            status: "start failed".into(),
            output: message.clone(),
        }),
    }
}

/// `url` with its database replaced by `dbname`, for both URL and key=value strings.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    if let Some(scheme_end) = url.find("://").filter(|_| url.starts_with("postgres")) {
        let after = scheme_end + 3;
        let query = url[after..].find('?').map(|i| after + i);
        let path = url[after..query.unwrap_or(url.len())].find('/').map(|i| after + i);
        let base = &url[..path.or(query).unwrap_or(url.len())];
        let tail = query.map_or("", |q| &url[q..]);
        format!("{base}/{dbname}{tail}")
    } else {
        format!("{url} dbname={dbname}")
    }
}

fn find_binaries() -> Result<PathBuf, EmbeddedError> {
    let complete = |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|p| dir.join(p).is_file());
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return if complete(&dir) { Ok(dir) } else { Err(EmbeddedError::BinariesNotFound) };
    }
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|dir| fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| complete(dir));
    if let Some(dir) = from_path {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or(EmbeddedError::BinariesNotFound)
}

/// `None` when not root; otherwise the user to run PostgreSQL as.
fn unprivileged_owner() -> Result<Option<Owner>, EmbeddedError> {
    if effective_uid()? != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("read /etc/passwd"))?;
    let user = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3 && fields[0] == name {
                Some(Owner { uid: fields[2].parse().ok()?, gid: fields[3].parse().ok()? })
            } else {
                None
            }
        })
    };
    user("postgres").or_else(|| user("nobody")).map(Some).ok_or(EmbeddedError::NoUnprivilegedUser)
}

fn effective_uid() -> Result<u32, EmbeddedError> {
    let status = fs::read_to_string("/proc/self/status").map_err(io_err("read /proc/self/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| EmbeddedError::Io {
            context: "parse /proc/self/status".into(),
            source: io::ErrorKind::InvalidData.into(),
        })
}

fn make_temp_dir() -> Result<PathBuf, EmbeddedError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wallet-ledger-{}-{n}-{nanos:x}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod temp dir"))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create temp dir")(e)),
        }
    }
    Err(io_err("create temp dir")(io::ErrorKind::AlreadyExists.into()))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("embedded server paths are built from UTF-8 parts")
}

fn tail(log: &Path) -> String {
    fs::read_to_string(log).map(|t| last_lines(&t, 12)).unwrap_or_else(|e| format!("(no server log: {e})"))
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Pieces `crate::cluster` (crash, restart, standby, signals) builds on.
impl EmbeddedServer {
    /// The cluster's data directory.
    pub(crate) fn data_path(&self) -> PathBuf {
        self.data_dir()
    }

    /// Runs one of the PostgreSQL programs as the server's user; the error carries its output.
    pub(crate) fn run_program(&self, program: &str, args: &[&str]) -> Result<(), EmbeddedError> {
        self.run(program, args)
    }

    /// `pg_ctl start` on the existing data directory, waiting until it accepts connections.
    pub(crate) fn start_existing(&self) -> Result<(), EmbeddedError> {
        self.pg_ctl_start()
    }

    /// Any program (`kill`), run as the server's user.
    pub(crate) fn command_as_owner(&self, program: &str) -> Command {
        self.command_raw(program)
    }

    /// A new throwaway directory owned by the server's user, with its watchdog, and no cluster
    /// in it yet (a standby's base backup goes there).
    pub(crate) fn empty_throwaway() -> Result<EmbeddedServer, EmbeddedError> {
        let bin = find_binaries()?;
        let owner = unprivileged_owner()?;
        let dir = make_temp_dir()?;
        let mut server = EmbeddedServer { dir, bin, port: PORT, tcp_tls: false, owner, watchdog: None };
        if let Some(o) = owner {
            std::os::unix::fs::chown(&server.dir, Some(o.uid), Some(o.gid)).map_err(io_err("chown temp dir"))?;
        }
        server.watchdog = Some(server.spawn_watchdog()?);
        Ok(server)
    }

    /// [`start`](EmbeddedServer::start) with `extra_conf` appended to `postgresql.conf` before
    /// the server first starts (for the embedded Citus cluster: `shared_preload_libraries`).
    pub(crate) fn start_with_conf(extra_conf: &str) -> Result<EmbeddedServer, EmbeddedError> {
        let server = EmbeddedServer::empty_throwaway()?;
        server.init()?;
        let conf = server.data_dir().join("postgresql.conf");
        let f = fs::OpenOptions::new().append(true).open(conf);
        f.and_then(|mut f| f.write_all(extra_conf.as_bytes())).map_err(io_err("write postgresql.conf"))?;
        server.pg_ctl_start()?;
        Ok(server)
    }
}

/// The directory of the PostgreSQL binaries [`EmbeddedServer::start`] would use.
pub(crate) fn binaries() -> Result<PathBuf, EmbeddedError> {
    find_binaries()
}

#[cfg(test)]
mod tests {
    use super::with_dbname;

    #[test]
    fn dbname_replacement() {
        assert_eq!(
            with_dbname("postgresql://u:p@h:5/app?sslmode=disable", "t1"),
            "postgresql://u:p@h:5/t1?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(with_dbname("postgres://h?x=1", "t1"), "postgres://h/t1?x=1");
        assert_eq!(with_dbname("host=/tmp port=5 dbname=a", "t1"), "host=/tmp port=5 dbname=a dbname=t1");
    }
}

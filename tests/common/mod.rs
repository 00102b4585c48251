//! Shared helpers for the integration tests: a fresh database per test, and snapshots of the
//! whole ledger to prove that a refused call changed nothing.
#![allow(dead_code)]

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use anyhow::{Context, Result};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{AccountId, Ledger, NewAccount, Transfer};
use wallet_ledger_embedded::TestDatabase;

/// The connection string of a test's database, used as a `String`; the database is dropped
/// with this value when it lives on DATABASE_URL's server.
#[derive(Debug)]
pub struct DatabaseUrl {
    url: String,
    _database: TestDatabase,
}

impl Deref for DatabaseUrl {
    type Target = String;

    fn deref(&self) -> &String {
        &self.url
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// A new, empty database (embedded server unless DATABASE_URL is set).
pub fn database(test: &str) -> Result<DatabaseUrl> {
    let database = TestDatabase::new(test).context("fresh test database")?;
    Ok(DatabaseUrl { url: database.url().to_string(), _database: database })
}

/// A ledger on a new, empty database (embedded server unless DATABASE_URL is set).
pub fn ledger(test: &str) -> Result<(Ledger, DatabaseUrl)> {
    let url = database(test)?;
    let ledger = Ledger::builder(&url).pool_size(20).build().context("connect")?;
    Ok((ledger, url))
}

/// A USD ledger with an unbounded issuer and `n` wallets funded with `each`.
pub fn funded(test: &str, n: usize, each: Decimal) -> Result<(Ledger, DatabaseUrl, AccountId, Vec<AccountId>)> {
    let (ledger, url) = ledger(test)?;
    ledger.define_currency("USD", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("USD").name("issuer").unbounded())?.id;
    let mut wallets = Vec::with_capacity(n);
    for i in 0..n {
        let id = ledger.open_account(&NewAccount::new("USD").name(format!("w{i}")))?.id;
        if each > dec!(0) {
            ledger.transfer(&Transfer::new(issuer, id, each))?;
        }
        wallets.push(id);
    }
    Ok((ledger, url, issuer, wallets))
}

/// Runs `$call`, checks its error against a pattern, and checks that the ledger did not change.
/// Evaluates to the error.
#[macro_export]
macro_rules! refused {
    ($ledger:expr, $call:expr, $pattern:pat $(if $guard:expr)?) => {{
        let before = $crate::common::snapshot(&$ledger)?;
        let result = $call;
        assert!(matches!(result, Err($pattern) $(if $guard)?), "unexpected result: {result:?}");
        assert_eq!(before, $crate::common::snapshot(&$ledger)?, "a refused call changed the ledger");
        result.unwrap_err()
    }};
}

/// Everything a refusal must leave unchanged: every account's balance and version, and the
/// number of transfers and entries.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    accounts: Vec<(i64, Decimal, i64)>,
    transfers: i64,
    entries: i64,
}

pub fn snapshot(ledger: &Ledger) -> Result<Snapshot> {
    let mut conn = ledger.connection()?;
    let client = conn.client();
    let accounts = client
        .query("SELECT id, balance, version FROM wallet_ledger.accounts ORDER BY id", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let transfers = client.query_one("SELECT count(*) FROM wallet_ledger.transfers", &[])?.get(0);
    let entries = client.query_one("SELECT count(*) FROM wallet_ledger.entries", &[])?.get(0);
    Ok(Snapshot { accounts, transfers, entries })
}

/// The server's own deadlock counter for the database behind `url`, read on a new connection
/// once the counter has settled (statistics are flushed asynchronously by exiting backends).
pub fn deadlocks(url: &str) -> Result<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let mut last = -1;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        client.batch_execute("SELECT pg_stat_clear_snapshot()")?;
        let now: i64 =
            client.query_one("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()", &[])?.get(0);
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// `url` with its user and password replaced (a key/value connection string).
pub fn url_as(url: &str, role: &str, password: &str) -> Result<String> {
    let config = postgres::Config::from_str(url)?;
    let mut out = String::new();
    if let Some(host) = config.get_hosts().first() {
        match host {
            postgres::config::Host::Tcp(name) => out.push_str(&format!("host={name} ")),
            postgres::config::Host::Unix(path) => out.push_str(&format!("host={} ", path.display())),
        }
    }
    if let Some(port) = config.get_ports().first() {
        out.push_str(&format!("port={port} "));
    }
    let dbname = config.get_dbname().context("test url names no database")?;
    out.push_str(&format!("dbname={dbname} user={role} password={password}"));
    Ok(out)
}

/// How many transactions wrote the transfers after `after`: rows of one transaction share
/// `created_at` (now() is the transaction's start) and `xmin`.
pub fn transactions_after(url: &str, after: i64) -> Result<(i64, i64)> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    let row = c.query_one(
        "SELECT count(*), count(DISTINCT (created_at, xmin::text)) FROM wallet_ledger.transfers WHERE id > $1",
        &[&after],
    )?;
    Ok((row.get(0), row.get(1)))
}

pub fn last_transfer(url: &str) -> Result<i64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(c.query_one("SELECT coalesce(max(id), 0) FROM wallet_ledger.transfers", &[])?.get(0))
}

/// Two disjoint pairs of `accounts` (at least two with an even id and two with an odd one) in
/// different lanes of a ledger with two combining lanes: the lane of a pair is its smaller id
/// modulo the lanes, so the first pair's is 0 and the second's 1.
pub fn pairs_in_two_lanes(accounts: &[AccountId]) -> ((AccountId, AccountId), (AccountId, AccountId)) {
    let even: Vec<AccountId> = accounts.iter().filter(|a| a.0 % 2 == 0).copied().collect();
    let odd: Vec<AccountId> = accounts.iter().filter(|a| a.0 % 2 != 0).copied().collect();
    ((even[0], even[1]), (odd[0], odd[1]))
}

/// Holds the row lock of account `id` in an open transaction on its own connection, until
/// dropped (the transaction then rolls back).
pub struct RowLock(postgres::Client);

impl RowLock {
    pub fn take(url: &str, id: AccountId) -> Result<RowLock> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute("BEGIN")?;
        client.execute("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE", &[&id.0])?;
        Ok(RowLock(client))
    }

    /// Ends the transaction, releasing the lock.
    pub fn release(mut self) -> Result<()> {
        Ok(self.0.batch_execute("ROLLBACK")?)
    }
}

/// Waits (up to 30 s) until at least `n` backends of `url`'s database wait for a lock.
pub fn await_lock_waiters(url: &str, n: i64) -> Result<()> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let started = std::time::Instant::now();
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )?
            .get(0);
        if waiting >= n {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < std::time::Duration::from_secs(30), "{waiting} of {n} lock waiters");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

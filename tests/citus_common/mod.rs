//! Shared helpers of the Citus tests: the cluster (embedded, or `DATABASE_URL_CITUS`), a fresh
//! schema per test, where an account's shard lives, and the cluster's deadlock counters.
//!
//! Without Citus on the machine (and no `DATABASE_URL_CITUS`), [`citus_url`] prints why and the
//! tests return early: skipped, never silently. With `WALLET_LEDGER_REQUIRE_CITUS=1` (CI sets
//! it) a missing Citus fails the test instead.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;
use rust_decimal::Decimal;
use wallet_ledger::{AccountId, Ledger, NewAccount, Transfer};
use wallet_ledger_embedded::embedded_citus::{citus_database, citus_installed};

/// The Citus database to test on, or `None` (with a printed reason) when this machine cannot
/// run Citus and none is configured.
pub fn citus_url(test: &str) -> Option<String> {
    let configured = std::env::var("DATABASE_URL_CITUS").is_ok_and(|u| !u.is_empty());
    if !configured {
        if let Err(e) = citus_installed() {
            let why = wallet_ledger_error_chain(&e);
            if std::env::var("WALLET_LEDGER_REQUIRE_CITUS").is_ok_and(|v| v == "1") {
                panic!("{test}: Citus is required (WALLET_LEDGER_REQUIRE_CITUS=1) but unavailable: {why}");
            }
            eprintln!("SKIPPED {test}: Citus tests need Citus: {why}");
            return None;
        }
    }
    Some(citus_database().unwrap_or_else(|e| panic!("{test}: Citus cluster: {}", wallet_ledger_error_chain(&e))))
}

fn wallet_ledger_error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// A schema of its own for one test on the Citus database, dropped (with its shards) on drop.
pub struct Schema {
    pub url: String,
    pub name: String,
}

impl Schema {
    pub fn new(url: &str, test: &str) -> Schema {
        static N: AtomicU32 = AtomicU32::new(0);
        let test: String = test.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(30).collect();
        let name =
            format!("c_{}_{}_{}", test.to_ascii_lowercase(), std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        Schema { url: url.to_string(), name }
    }

    /// A Citus-mode ledger in this schema (migrations applied on first build).
    pub fn ledger(&self, pool: u32) -> Result<Ledger> {
        self.builder(pool)
            .build()
            .map_err(|e| anyhow::anyhow!("build the Citus ledger: {}", wallet_ledger_error_chain(&e)))
    }

    pub fn builder(&self, pool: u32) -> wallet_ledger::LedgerBuilder {
        Ledger::builder(&self.url).schema(&self.name).pool_size(pool).citus(true)
    }

    /// `sql` with `wallet_ledger.` rewritten for this schema.
    pub fn sql(&self, sql: &str) -> String {
        sql.replace("wallet_ledger.", &format!("\"{}\".", self.name))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

/// The worker node (`host:port`) holding each account's shard.
pub fn workers_of(schema: &Schema, accounts: &[AccountId]) -> Result<BTreeMap<AccountId, String>> {
    let mut client = postgres::Client::connect(&schema.url, postgres::NoTls)?;
    let table = format!("\"{}\".accounts", schema.name);
    let mut out = BTreeMap::new();
    for id in accounts {
        let row = client.query_one(
            "SELECT p.nodename || ':' || p.nodeport FROM pg_dist_shard_placement p
              WHERE p.shardid = get_shard_id_for_distribution_column($1::text::regclass, $2::bigint)",
            &[&table, &id.0],
        )?;
        out.insert(*id, row.get(0));
    }
    Ok(out)
}

/// The sum of the server deadlock counters (pg_stat_database) of every worker for this database,
/// once they have settled. Local deadlocks on a worker count there; Citus's distributed deadlock
/// detector does not count its cancellations anywhere, so the tests also run the ledger with no
/// retries, where such a cancellation would surface as an error.
pub fn worker_deadlocks(url: &str) -> Result<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let mut last = -1;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let rows = client.query(
            "SELECT result FROM run_command_on_workers($$SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()$$)",
            &[],
        )?;
        let now: i64 = rows.iter().map(|r| r.get::<_, String>(0).parse::<i64>().unwrap_or(0)).sum();
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// A USD ledger on `schema` with an unbounded issuer and wallets funded with `each`, opened until
/// at least `per_worker` wallets sit on each of two workers; returns them grouped by worker.
pub fn funded_on_both_workers(
    schema: &Schema,
    ledger: &Ledger,
    per_worker: usize,
    each: Decimal,
) -> Result<(AccountId, Vec<Vec<AccountId>>)> {
    ledger.define_currency("USD", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("USD").name("issuer").unbounded())?.id;
    let mut by_worker: BTreeMap<String, Vec<AccountId>> = BTreeMap::new();
    for i in 0..200 {
        if by_worker.len() >= 2 && by_worker.values().all(|v| v.len() >= per_worker) {
            break;
        }
        let id = ledger.open_account(&NewAccount::new("USD").name(format!("w{i}")))?.id;
        let worker = workers_of(schema, &[id])?.remove(&id).expect("placed");
        let list = by_worker.entry(worker).or_default();
        if list.len() < per_worker {
            ledger.transfer(&Transfer::new(issuer, id, each))?;
            list.push(id);
        }
    }
    let groups: Vec<Vec<AccountId>> = by_worker.into_values().filter(|v| v.len() >= per_worker).collect();
    anyhow::ensure!(groups.len() == 2, "accounts did not spread over two workers: {groups:?}");
    Ok((issuer, groups))
}

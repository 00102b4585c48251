//! Migrations and the database's own constraints, the second line behind the Rust checks.

mod common;

use std::thread;

use anyhow::Result;
use common::funded;
use postgres::error::SqlState;
use rust_decimal_macros::dec;
use wallet_ledger::{schema, Ledger, LedgerError};

#[test]
fn concurrent_connects_apply_migrations_once() -> Result<()> {
    let url = common::database("migrate_race")?;
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || Ledger::builder(&url).pool_size(1).build().map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().expect("connect thread panicked")?;
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let versions: Vec<i32> = client
        .query("SELECT version FROM wallet_ledger.schema_version ORDER BY version", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = schema::MIGRATIONS.iter().map(|(v, _, _)| *v).collect();
    assert_eq!(versions, expected);
    // A second apply is a no-op.
    Ledger::connect(&url)?;
    let n: i64 = client.query_one("SELECT count(*) FROM wallet_ledger.schema_version", &[])?.get(0);
    assert_eq!(n, schema::MIGRATIONS.len() as i64);
    Ok(())
}

#[test]
fn version_checks() -> Result<()> {
    let url = common::database("versions")?;
    let unmigrated = Ledger::builder(&url).migrate(false).build().unwrap_err();
    assert!(matches!(unmigrated, LedgerError::SchemaOutdated { found: 0, .. }), "{unmigrated:?}");
    Ledger::connect(&url)?;
    Ledger::builder(&url).migrate(false).build()?;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.execute("INSERT INTO wallet_ledger.schema_version (version, name) VALUES (999, 'future')", &[])?;
    let e = Ledger::connect(&url).unwrap_err();
    assert!(matches!(e, LedgerError::SchemaTooNew { found: 999, .. }), "{e:?}");
    Ok(())
}

#[test]
fn malformed_connection_strings_are_refused_without_echoing_them() {
    let e = Ledger::connect("postgresql://user:s3cret@host:notaport/db").unwrap_err();
    assert!(matches!(e, LedgerError::InvalidInput { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("s3cret"));
    let b = Ledger::builder("postgresql://user:s3cret@localhost/db");
    assert!(!format!("{b:?}").contains("s3cret"));
}

#[test]
fn the_database_enforces_the_invariants_too() -> Result<()> {
    let (l, _, _, w) = funded("constraints", 2, dec!(10.00))?;
    let mut conn = l.connection()?;
    let c = conn.client();
    let refused = |r: Result<u64, postgres::Error>, state: SqlState| {
        let e = r.expect_err("the database accepted a write that breaks an invariant");
        assert_eq!(e.code(), Some(&state), "{e:?}");
    };
    let (a, b) = (w[0].0, w[1].0);
    refused(
        c.execute("UPDATE wallet_ledger.accounts SET balance = -0.01 WHERE id = $1", &[&a]),
        SqlState::CHECK_VIOLATION,
    );
    refused(
        c.execute(
            "INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES ($1, $2, 0)",
            &[&a, &b],
        ),
        SqlState::CHECK_VIOLATION,
    );
    refused(
        c.execute("INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES ($1, $1, 1)", &[&a]),
        SqlState::CHECK_VIOLATION,
    );
    refused(
        c.execute(
            "INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES ($1, 999999, 1)",
            &[&a],
        ),
        SqlState::FOREIGN_KEY_VIOLATION,
    );
    refused(c.execute("INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version) VALUES (999999, $1, 1, 1, 99)", &[&a]), SqlState::FOREIGN_KEY_VIOLATION);
    refused(c.execute("INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version) SELECT transfer_id, account_id, 1, 1, account_version FROM wallet_ledger.entries LIMIT 1", &[]), SqlState::UNIQUE_VIOLATION);
    refused(
        c.execute("INSERT INTO wallet_ledger.accounts (currency, min_balance) VALUES ('USD', 5)", &[]),
        SqlState::CHECK_VIOLATION,
    );
    refused(
        c.execute("INSERT INTO wallet_ledger.accounts (currency) VALUES ('XXX')", &[]),
        SqlState::FOREIGN_KEY_VIOLATION,
    );
    refused(
        c.execute("UPDATE wallet_ledger.accounts SET balance = 1e30 WHERE min_balance IS NULL", &[]),
        SqlState::CHECK_VIOLATION,
    );
    Ok(())
}

#[test]
fn migration_script_holds_every_migration() {
    let script = schema::migration_script();
    for (version, name, _) in schema::MIGRATIONS {
        assert!(script.contains(&format!("wallet-ledger migration {version}: {name}")));
    }
    assert!(script.contains("CREATE FUNCTION wallet_ledger.transfer"));
}

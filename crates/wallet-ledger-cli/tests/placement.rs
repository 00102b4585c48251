//! The command line in a schema of the backend's choice: `migrate --print` gives the script a
//! backend's migration tool applies, and the other commands then work in that schema.

#[path = "../../../tests/common/mod.rs"]
mod common;

use anyhow::Result;
use postgres::NoTls;
use wallet_ledger::schema::{migration_script_for, SchemaName};

fn schemas(client: &mut postgres::Client) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' AND nspname <> 'information_schema' ORDER BY 1",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[test]
fn the_cli_prints_the_migration_for_a_schema_and_works_in_it() -> Result<()> {
    let url = common::database("placement_cli")?;
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
            .args(args)
            .env("DATABASE_URL", url.as_str())
            .env("WALLET_LEDGER_SCHEMA", "cli_ledger")
            .output()
    };
    let printed = cli(&["migrate", "--print"])?;
    assert!(printed.status.success());
    let script = String::from_utf8(printed.stdout)?;
    assert_eq!(script, migration_script_for(&SchemaName::new("cli_ledger")?));
    let mut client = postgres::Client::connect(&url, NoTls)?;
    client.batch_execute(&script)?;
    let defined = cli(&["currency", "define", "USD", "2"])?;
    assert!(defined.status.success(), "{}", String::from_utf8_lossy(&defined.stderr));
    let n: i64 = client.query_one("SELECT count(*) FROM cli_ledger.currencies", &[])?.get(0);
    assert_eq!(n, 1);
    assert_eq!(schemas(&mut client)?, ["cli_ledger", "public"]);
    let bad = cli(&["--schema", "Robert'); DROP", "migrate", "--print"])?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid schema name"));
    Ok(())
}

//! The migrator records a checksum of every migration it applies and refuses a database whose
//! applied migrations differ from this build's texts, naming the migration and applying nothing.

mod common;

use anyhow::Result;
use sha2::{Digest, Sha256};
use wallet_ledger::citus::CITUS_MIGRATIONS;
use wallet_ledger::schema::{migration_script_for, SchemaName, MIGRATIONS, SCHEMA_VERSION};
use wallet_ledger::{Ledger, LedgerError};

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn client(url: &str) -> Result<postgres::Client> {
    Ok(postgres::Client::connect(url, postgres::NoTls)?)
}

fn recorded(client: &mut postgres::Client) -> Result<Vec<(i32, Option<String>)>> {
    let rows = client.query("SELECT version, checksum FROM wallet_ledger.schema_version ORDER BY version", &[])?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[test]
fn every_applied_migration_is_recorded_with_the_checksum_of_its_text() -> Result<()> {
    let (_ledger, url) = common::ledger("migrations_recorded")?;
    let expected: Vec<(i32, Option<String>)> = MIGRATIONS.iter().map(|(v, _, sql)| (*v, Some(sha256(sql)))).collect();
    assert_eq!(recorded(&mut client(&url)?)?, expected);
    assert!(!CITUS_MIGRATIONS.is_empty());
    Ok(())
}

#[test]
fn a_changed_migration_is_refused_by_name_and_nothing_is_applied() -> Result<()> {
    let (ledger, url) = common::ledger("migrations_changed")?;
    drop(ledger);
    let mut db = client(&url)?;
    // As if migration 3 had been applied from an edited text, and the last one were pending.
    db.execute("UPDATE wallet_ledger.schema_version SET checksum = repeat('0', 64) WHERE version = 3", &[])?;
    db.execute("DELETE FROM wallet_ledger.schema_version WHERE version = $1", &[&SCHEMA_VERSION])?;
    match Ledger::connect(&url) {
        Err(LedgerError::MigrationChanged { version, name, applied, expected, .. }) => {
            assert_eq!((version, name), (3, MIGRATIONS[2].1));
            assert_eq!(applied, "0".repeat(64));
            assert_eq!(expected, sha256(MIGRATIONS[2].2));
        }
        other => panic!("expected MigrationChanged, got {other:?}"),
    }
    let versions: Vec<i32> = recorded(&mut db)?.into_iter().map(|(v, _)| v).collect();
    let pending_left: Vec<i32> = MIGRATIONS.iter().map(|(v, _, _)| *v).filter(|v| *v != SCHEMA_VERSION).collect();
    assert_eq!(versions, pending_left, "the pending migration was not applied");
    // Checking without migrating refuses it too.
    let err = Ledger::builder(&url).migrate(false).build().unwrap_err();
    assert!(matches!(err, LedgerError::MigrationChanged { version: 3, .. }), "{err:?}");
    assert_eq!(err.kind(), "migration_changed");
    Ok(())
}

#[test]
fn a_database_from_before_checksums_is_accepted_and_its_checksums_recorded() -> Result<()> {
    let (ledger, url) = common::ledger("migrations_before_checksums")?;
    drop(ledger);
    let mut db = client(&url)?;
    db.batch_execute("ALTER TABLE wallet_ledger.schema_version DROP COLUMN checksum")?;
    Ledger::builder(&url).migrate(false).build()?;
    Ledger::connect(&url)?;
    let expected: Vec<(i32, Option<String>)> = MIGRATIONS.iter().map(|(v, _, sql)| (*v, Some(sha256(sql)))).collect();
    assert_eq!(recorded(&mut db)?, expected);
    Ok(())
}

#[test]
fn the_migration_script_records_the_same_checksums() -> Result<()> {
    let (ledger, url) = common::ledger("migrations_script")?;
    drop(ledger);
    let mut db = client(&url)?;
    let schema = SchemaName::new("scripted_ledger")?;
    db.batch_execute(&migration_script_for(&schema))?;
    Ledger::builder(&url).schema("scripted_ledger").migrate(false).build()?;
    let rows = db.query("SELECT version, checksum FROM scripted_ledger.schema_version ORDER BY version", &[])?;
    let got: Vec<(i32, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: Vec<(i32, Option<String>)> = MIGRATIONS.iter().map(|(v, _, sql)| (*v, Some(sha256(sql)))).collect();
    assert_eq!(got, expected);
    db.execute("UPDATE scripted_ledger.schema_version SET checksum = 'edited' WHERE version = 1", &[])?;
    let err = Ledger::builder(&url).schema("scripted_ledger").migrate(false).build().unwrap_err();
    assert!(matches!(err, LedgerError::MigrationChanged { version: 1, .. }), "{err:?}");
    Ok(())
}

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

/// A ledger populated at migration 10 moves forward to the feed's migration with its data: its
/// transfers are in the feed (by id, in the order their locks were taken), accounts opened
/// before it are not (their opening was never recorded as an event), and everything after it is.
#[test]
fn a_populated_ledger_migrates_to_the_feed_with_its_transfers_in_it() -> Result<()> {
    use rust_decimal_macros::dec;
    use wallet_ledger::{ChangeKind, NewAccount, Transfer};

    let url = common::database("migrations_feed_forward")?;
    let mut db = client(url.as_str())?;
    db.batch_execute(
        "CREATE SCHEMA wallet_ledger;
         CREATE TABLE wallet_ledger.schema_version (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(), checksum text);",
    )?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v <= 10) {
        db.batch_execute(sql)?;
        db.execute(
            "INSERT INTO wallet_ledger.schema_version (version, name, checksum) VALUES ($1, $2, $3)",
            &[version, name, &sha256(sql)],
        )?;
    }
    db.batch_execute(
        "INSERT INTO wallet_ledger.currencies (code, scale) VALUES ('USD', 2);
         INSERT INTO wallet_ledger.accounts (currency, min_balance) VALUES ('USD', NULL), ('USD', 0::numeric), ('USD', 0::numeric);",
    )?;
    let mut old_ids = Vec::new();
    for (from, to, amount) in [(1_i64, 2_i64, "50.00"), (1, 3, "20.00"), (2, 3, "5.00")] {
        let row = db.query_one(
            "SELECT outcome, transfer_id FROM wallet_ledger.transfer($1, $2, $3::text::numeric, NULL, NULL, 0::smallint, 0)",
            &[&from, &to, &amount],
        )?;
        assert_eq!(row.get::<_, String>(0), "ok");
        old_ids.push(row.get::<_, i64>(1));
    }

    let l = Ledger::connect(url.as_str())?;
    assert_eq!(recorded(&mut db)?.len(), MIGRATIONS.len());
    let opened = l.open_account(&NewAccount::new("USD"))?.id;
    let after = l.transfer(&Transfer::new(wallet_ledger::AccountId(3), opened, dec!(1.00)))?;
    let changes = l.changes(None, 100)?.changes;
    let summary: Vec<(ChangeKind, Option<i64>)> = changes.iter().map(|c| (c.kind, c.transfer.map(|t| t.0))).collect();
    assert_eq!(
        summary,
        [
            (ChangeKind::Transfer, Some(old_ids[0])),
            (ChangeKind::Transfer, Some(old_ids[1])),
            (ChangeKind::Transfer, Some(old_ids[2])),
            (ChangeKind::AccountOpened, None),
            (ChangeKind::Transfer, Some(after.transfer_id.0)),
        ]
    );
    assert_eq!(changes[2].leg(wallet_ledger::AccountId(3)).map(|g| (g.balance, g.version)), Some((dec!(25.00), 2)));
    assert!(l.verify()?.is_clean());
    Ok(())
}

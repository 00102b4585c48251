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

/// A client on `url` whose database holds migrations 1..=`version`, recorded as the migrator
/// records them, a USD currency and three accounts (1 unbounded, 2 and 3 with a zero floor).
fn at_version(url: &str, version: i32) -> Result<postgres::Client> {
    let mut db = client(url)?;
    db.batch_execute(
        "CREATE SCHEMA wallet_ledger;
         CREATE TABLE wallet_ledger.schema_version (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(), checksum text);",
    )?;
    for (v, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v <= version) {
        db.batch_execute(sql)?;
        db.execute(
            "INSERT INTO wallet_ledger.schema_version (version, name, checksum) VALUES ($1, $2, $3)",
            &[v, name, &sha256(sql)],
        )?;
    }
    db.batch_execute(
        "INSERT INTO wallet_ledger.currencies (code, scale) VALUES ('USD', 2);
         INSERT INTO wallet_ledger.accounts (currency, min_balance) VALUES ('USD', NULL), ('USD', 0::numeric), ('USD', 0::numeric);",
    )?;
    Ok(db)
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
    let mut db = at_version(url.as_str(), 10)?;
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

/// What a ledger holds, read straight from its tables: every account's balance, held amount and
/// version, and every transfer, entry and hold.
fn contents(db: &mut postgres::Client) -> Result<Vec<String>> {
    let sql = "SELECT format('account %s %s %s %s', id, balance, held, version) FROM wallet_ledger.accounts
               UNION ALL SELECT format('transfer %s %s %s %s %s', id, from_account, to_account, amount, reversed)
                 FROM wallet_ledger.transfers
               UNION ALL SELECT format('entry %s %s %s %s %s %s', id, transfer_id, account_id, amount, balance_after, account_version)
                 FROM wallet_ledger.entries
               UNION ALL SELECT format('hold %s %s %s %s %s', id, from_account, amount, state, transfer_id)
                 FROM wallet_ledger.holds
               ORDER BY 1";
    Ok(db.query(sql, &[])?.iter().map(|r| r.get(0)).collect())
}

/// A ledger populated at migration 11 (transfers, a posting, a captured and an open hold) moves
/// forward to migration 12 with every row as it was; the movement tables' foreign keys are gone,
/// every function runs as its owner, and the ledger works on, for its owner and a granted role.
#[test]
fn a_populated_ledger_migrates_to_the_write_guard_with_its_data() -> Result<()> {
    use rust_decimal_macros::dec;
    use wallet_ledger::{AccountId, Transfer};

    let url = common::database("migrations_guard_forward")?;
    let mut db = at_version(url.as_str(), 11)?;
    for (from, to, amount) in [(1_i64, 2_i64, "50.00"), (1, 3, "20.00"), (2, 3, "5.00")] {
        let outcome: String = db
            .query_one(
                "SELECT outcome FROM wallet_ledger.transfer($1, $2, $3::text::numeric, NULL, NULL, 0::smallint, 0)",
                &[&from, &to, &amount],
            )?
            .get(0);
        assert_eq!(outcome, "ok");
    }
    let posted: String = db
        .query_one(
            "SELECT outcome FROM wallet_ledger.post(ARRAY[2, 3, 1]::bigint[], ARRAY[-3, 1, 2]::numeric[], NULL, NULL, 0::smallint, 0)",
            &[],
        )?
        .get(0);
    assert_eq!(posted, "ok");
    let mut holds = Vec::new();
    for amount in ["4.00", "6.00"] {
        let row = db.query_one(
            "SELECT outcome, hold_id FROM wallet_ledger.hold(3, 2, $1::text::numeric, 60000, NULL, NULL, 0::smallint, 0)",
            &[&amount],
        )?;
        assert_eq!(row.get::<_, String>(0), "ok");
        holds.push(row.get::<_, i64>(1));
    }
    let captured: String =
        db.query_one("SELECT outcome FROM wallet_ledger.capture($1, NULL, 0::smallint, 0)", &[&holds[0]])?.get(0);
    assert_eq!(captured, "ok");
    let before = contents(&mut db)?;
    let foreign_keys = "SELECT conname::text FROM pg_constraint
                         WHERE contype = 'f' AND connamespace = 'wallet_ledger'::regnamespace ORDER BY 1";
    assert_eq!(db.query(foreign_keys, &[])?.len(), 9);

    let l = Ledger::connect(url.as_str())?;
    assert_eq!(recorded(&mut db)?.len(), MIGRATIONS.len());
    assert_eq!(contents(&mut db)?, before, "migration 12 changed the ledger's rows");
    let kept: Vec<String> = db.query(foreign_keys, &[])?.iter().map(|r| r.get(0)).collect();
    assert_eq!(kept, ["accounts_currency_fkey"]);
    assert!(l.verify()?.is_clean());
    l.transfer(&Transfer::new(AccountId(3), AccountId(2), dec!(1.00)))?;
    l.capture(wallet_ledger::HoldId(holds[1]), None)?;
    assert_eq!(l.balance(AccountId(2))?, dec!(50.00) - dec!(5.00) - dec!(3.00) + dec!(4.00) + dec!(1.00) + dec!(6.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

/// The write guard's rule for every later migration: each function of the schema runs as its
/// owner with the pinned search_path (a function created without them would run as its caller,
/// and a granted role could not write through it, or could reach inside it by its search_path).
#[test]
fn every_function_of_the_ledger_runs_as_its_owner_with_a_pinned_search_path() -> Result<()> {
    let url = common::database("migrations_guard_functions")?;
    let _ledger = Ledger::connect(url.as_str())?;
    let mut db = client(url.as_str())?;
    let rows = db.query(
        "SELECT p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig, '{}')
           FROM pg_proc p WHERE p.pronamespace = 'wallet_ledger'::regnamespace ORDER BY 1",
        &[],
    )?;
    assert!(rows.len() > 20, "the ledger's functions were not found");
    for row in rows {
        let (name, definer, config): (String, bool, Vec<String>) = (row.get(0), row.get(1), row.get(2));
        assert!(definer, "{name} is not SECURITY DEFINER");
        assert!(config.iter().any(|c| c == "search_path=pg_catalog, pg_temp"), "{name}: {config:?}");
    }
    Ok(())
}

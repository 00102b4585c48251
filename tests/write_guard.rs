//! The write guard (migration 12): a role given the ledger by `grant_access` moves money only
//! through the ledger's functions, and every direct write of its own on balances, transfers,
//! entries or holds is refused by PostgreSQL, changing nothing; the owner's direct writes meet
//! the reference check the foreign keys made; what a superuser writes with triggers switched
//! off that points at nothing is reported by the audit.

mod common;

use std::time::Duration;

use anyhow::Result;
use postgres::error::SqlState;
use rust_decimal_macros::dec;
use wallet_ledger::{Hold, Ledger, LedgerError, NewAccount, Posting, Reversal, Transfer, Violation};

/// A login role for one test, named after the test's database (roles are cluster-wide), dropped
/// with its privileges when the test ends.
struct TestRole {
    name: String,
    owner_url: String,
}

impl std::ops::Deref for TestRole {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        if let Ok(mut db) = postgres::Client::connect(&self.owner_url, postgres::NoTls) {
            let _ = db.batch_execute(&format!("DROP OWNED BY {0}; DROP ROLE IF EXISTS {0}", self.name));
        }
    }
}

fn create_role(owner: &Ledger, owner_url: &str, test: &str) -> Result<TestRole> {
    let mut conn = owner.connection()?;
    let db: String = conn.client().query_one("SELECT current_database()", &[])?.get(0);
    let name = format!("{db}_{test}");
    conn.client()
        .batch_execute(&format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN PASSWORD 'app-secret'"))?;
    Ok(TestRole { name, owner_url: owner_url.to_string() })
}

fn insufficient_privilege(result: Result<u64, postgres::Error>) -> bool {
    matches!(result, Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE))
}

#[test]
fn a_granted_role_moves_money_through_the_functions_and_nothing_else() -> Result<()> {
    let (owner, url, issuer, w) = common::funded("guard_granted", 3, dec!(100))?;
    let role = create_role(&owner, &url, "granted")?;
    owner.grant_access(&role)?;
    owner.grant_access(&role)?; // idempotent
    let app_url = common::url_as(&url, &role, "app-secret")?;

    // Every kind of operation works for the granted role (migrating on connect finds nothing
    // to do and writes nothing).
    let app = Ledger::builder(&app_url).pool_size(4).build()?;
    app.define_currency("EUR", 2)?;
    let fresh = app.open_account(&NewAccount::new("USD").name("opened by the app").max_balance(dec!(1000)))?.id;
    let paid = app.transfer(&Transfer::new(w[0], fresh, dec!(10)).idempotency_key("guard-1"))?;
    assert_eq!(
        app.transfer(&Transfer::new(w[0], fresh, dec!(10)).idempotency_key("guard-1"))?.transfer_id,
        paid.transfer_id
    );
    app.transfer_batch(&[Transfer::new(w[1], fresh, dec!(1)), Transfer::new(w[2], w[0], dec!(2))])?;
    app.post(&Posting::new().leg(w[1], dec!(-3)).leg(w[2], dec!(1)).leg(fresh, dec!(2)))?;
    let hold = app.hold(&Hold::new(w[2], fresh, dec!(5)).expires_in(Duration::from_secs(60)))?;
    app.capture(hold.hold_id, None)?;
    app.reverse(&Reversal::of(paid.transfer_id).amount(dec!(4)))?;
    app.freeze(w[1])?;
    app.unfreeze(w[1])?;
    app.set_max_balance(fresh, Some(dec!(2000)))?;
    assert_eq!(app.consume("guard-consumer", 100, |_, _| Ok(()))?, app.changes(None, 1000)?.changes.len());
    let mut tx_client = postgres::Client::connect(&app_url, postgres::NoTls)?;
    let mut tx = tx_client.transaction()?;
    app.transfer_in(&mut tx, &Transfer::new(w[2], fresh, dec!(1)))?;
    tx.commit()?;
    assert!(app.verify()?.is_clean());
    assert_eq!(app.balance(fresh)?, dec!(10) + dec!(1) + dec!(2) + dec!(5) - dec!(4) + dec!(1));

    // Every direct write is refused, and the ledger is unchanged.
    let before = common::snapshot(&owner)?;
    let mut db = postgres::Client::connect(&app_url, postgres::NoTls)?;
    let (a, b, t) = (w[0].0, w[1].0, paid.transfer_id.0);
    let attempts: Vec<(&str, String)> = vec![
        ("a balance raised", format!("UPDATE wallet_ledger.accounts SET balance = balance + 100 WHERE id = {a}")),
        ("a version rewound", format!("UPDATE wallet_ledger.accounts SET version = 0 WHERE id = {a}")),
        ("a status set around the functions", format!("UPDATE wallet_ledger.accounts SET status = 'closed' WHERE id = {b}")),
        ("an account opened with money", "INSERT INTO wallet_ledger.accounts (currency, balance) VALUES ('USD', 1000)".into()),
        ("an account opened mid-chain", "INSERT INTO wallet_ledger.accounts (currency, version) VALUES ('USD', 7)".into()),
        ("an account deleted", format!("DELETE FROM wallet_ledger.accounts WHERE id = {}", issuer.0)),
        (
            "a transfer between accounts that do not exist",
            "INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES (424242, 434343, 5)".into(),
        ),
        ("a transfer's amount changed", format!("UPDATE wallet_ledger.transfers SET amount = 1 WHERE id = {t}")),
        (
            "an entry on an account that does not exist",
            format!(
                "INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version) \
                 VALUES ({t}, 424242, 5, 5, 1)"
            ),
        ),
        ("an entry rewritten", format!("UPDATE wallet_ledger.entries SET amount = 0.01 WHERE transfer_id = {t}")),
        ("entries deleted", format!("DELETE FROM wallet_ledger.entries WHERE account_id = {a}")),
        ("entries truncated", "TRUNCATE wallet_ledger.entries".into()),
        ("a hold released by hand", "UPDATE wallet_ledger.holds SET state = 'voided'".into()),
        ("a hold event made up", format!("INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES ({}, 'voided', 5)", hold.hold_id.0)),
        ("a feed event made up", format!("INSERT INTO wallet_ledger.feed_events (kind, account_id, balance, version, status) VALUES ('account_opened', {a}, 0, 0, 'open')")),
        ("the feed's horizon moved", "UPDATE wallet_ledger.feed_state SET horizon = horizon + 1000".into()),
        ("a currency's scale changed", "UPDATE wallet_ledger.currencies SET scale = 0".into()),
        ("an account locked out of order", format!("SELECT 1 FROM wallet_ledger.accounts WHERE id = {a} FOR UPDATE")),
        ("the migrations' record rewritten", "DELETE FROM wallet_ledger.schema_version".into()),
    ];
    for (what, sql) in &attempts {
        let result = db.execute(sql.as_str(), &[]);
        assert!(insufficient_privilege(result), "{what}: not refused by privileges ({sql})");
    }
    assert_eq!(before, common::snapshot(&owner)?, "a refused direct write changed the ledger");
    assert!(owner.verify()?.is_clean());
    Ok(())
}

#[test]
fn the_functions_run_with_their_own_search_path() -> Result<()> {
    let (owner, url, _, w) = common::funded("guard_search_path", 2, dec!(10))?;
    let role = create_role(&owner, &url, "search_path")?;
    owner.grant_access(&role)?;
    // A caller's search_path that puts its own temporary schema first, with a table shadowing a
    // type name the functions use, changes nothing inside them.
    let mut db = postgres::Client::connect(&common::url_as(&url, &role, "app-secret")?, postgres::NoTls)?;
    db.batch_execute("CREATE TEMP TABLE numeric (x int); SET search_path = pg_temp, pg_catalog")?;
    let row = db.query_one(
        "SELECT outcome, to_balance FROM wallet_ledger.transfer($1, $2, 1.50, 'sp-1', NULL, 0::smallint, 0)",
        &[&w[0].0, &w[1].0],
    )?;
    assert_eq!(row.get::<_, String>(0), "ok");
    assert_eq!(row.get::<_, rust_decimal::Decimal>(1), dec!(11.50));
    Ok(())
}

#[test]
fn revoked_or_never_granted_roles_reach_nothing() -> Result<()> {
    let (owner, url, _, w) = common::funded("guard_revoked", 2, dec!(10))?;
    let role = create_role(&owner, &url, "revoked")?;
    let app_url = common::url_as(&url, &role, "app-secret")?;
    let mut db = postgres::Client::connect(&app_url, postgres::NoTls)?;
    let call = "SELECT outcome FROM wallet_ledger.transfer($1, $2, 1, NULL, NULL, 0::smallint, 0)";
    let never = db.query(call, &[&w[0].0, &w[1].0]);
    assert!(matches!(never, Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)));

    owner.grant_access(&role)?;
    assert_eq!(db.query_one(call, &[&w[0].0, &w[1].0])?.get::<_, String>(0), "ok");
    owner.revoke_access(&role)?;
    let revoked = db.query(call, &[&w[0].0, &w[1].0]);
    assert!(matches!(revoked, Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)));
    assert_eq!(owner.balance(w[1])?, dec!(11));

    assert!(matches!(owner.grant_access(""), Err(LedgerError::InvalidInput { field: "role", .. })));
    assert!(matches!(owner.grant_access("no_such_role_anywhere"), Err(LedgerError::Database(_))));
    // A granted role cannot pass the ledger on: it does not own it.
    let other = create_role(&owner, &url, "other")?;
    owner.grant_access(&role)?;
    let app = Ledger::builder(&app_url).pool_size(1).build()?;
    assert!(matches!(app.grant_access(&other), Err(LedgerError::Database(_))));
    Ok(())
}

/// Roles that privileges do not bind (the owner, a superuser) still meet the reference check
/// the foreign keys made: a row naming an account, transfer or hold that does not exist is
/// refused with foreign_key_violation, and so is deleting, re-numbering or truncating a row
/// that others name; the ledger's own calls in the same transaction do not lift the check.
#[test]
fn the_owner_meets_the_reference_check_on_every_direct_write() -> Result<()> {
    let (owner, _url, issuer, w) = common::funded("guard_owner", 2, dec!(10))?;
    let paid = owner.transfer(&Transfer::new(w[0], w[1], dec!(1)))?;
    let hold = owner.hold(&Hold::new(w[0], w[1], dec!(2)))?;
    let (a, t, h) = (w[0].0, paid.transfer_id.0, hold.hold_id.0);
    let before = common::snapshot(&owner)?;
    let mut conn = owner.connection()?;
    let db = conn.client();
    let refused: Vec<(&str, String, SqlState)> = vec![
        (
            "an entry on an account that does not exist",
            format!("INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version) VALUES ({t}, 999001, 1, 1, 1)"),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
        (
            "an entry of a transfer that does not exist",
            format!("INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version) VALUES (999002, {a}, 1, 1, 999)"),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
        ("an entry moved to no account", format!("UPDATE wallet_ledger.entries SET account_id = 999001 WHERE transfer_id = {t}"), SqlState::FOREIGN_KEY_VIOLATION),
        (
            "a transfer from an account that does not exist",
            format!("INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES (999001, {a}, 1)"),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
        (
            "a hold to an account that does not exist",
            format!("INSERT INTO wallet_ledger.holds (from_account, to_account, amount, expires_at) VALUES ({a}, 999001, 1, now())"),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
        ("a hold captured by no transfer", format!("UPDATE wallet_ledger.holds SET transfer_id = 999002 WHERE id = {h}"), SqlState::FOREIGN_KEY_VIOLATION),
        (
            "an event of a hold that does not exist",
            "INSERT INTO wallet_ledger.hold_events (hold_id, event, amount) VALUES (999003, 'voided', 1)".into(),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
        ("an account others name deleted", format!("DELETE FROM wallet_ledger.accounts WHERE id = {}", issuer.0), SqlState::FOREIGN_KEY_VIOLATION),
        ("a transfer its entries name deleted", format!("DELETE FROM wallet_ledger.transfers WHERE id = {t}"), SqlState::FOREIGN_KEY_VIOLATION),
        ("a hold its events name deleted", format!("DELETE FROM wallet_ledger.holds WHERE id = {h}"), SqlState::FOREIGN_KEY_VIOLATION),
        ("accounts truncated alone", "TRUNCATE wallet_ledger.accounts CASCADE".into(), SqlState::FEATURE_NOT_SUPPORTED),
    ];
    for (what, sql, state) in &refused {
        let result = db.execute(sql.as_str(), &[]);
        assert!(matches!(&result, Err(e) if e.code() == Some(state)), "{what}: {result:?} ({sql})");
    }
    // A ledger call earlier in the same transaction does not lift the check afterwards.
    let mut tx = db.transaction()?;
    owner.transfer_in(&mut tx, &Transfer::new(w[1], w[0], dec!(1)))?;
    let after_call = tx.execute(
        &format!("INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES ({a}, 999001, 1)"),
        &[],
    );
    assert!(matches!(&after_call, Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)), "{after_call:?}");
    drop(tx);
    drop(conn);
    assert_eq!(before, common::snapshot(&owner)?, "a refused direct write changed the ledger");
    assert!(owner.verify()?.is_clean());
    Ok(())
}

/// The broken control of the audit's `references` check: rows a superuser wrote with the
/// triggers switched off (`session_replication_role = replica`, which switched foreign keys off
/// too) that point at nothing. The check must name each of them, and a clean ledger none.
#[test]
fn the_audit_reports_what_a_superuser_wrote_past_the_guard() -> Result<()> {
    let (owner, _url, _, w) = common::funded("guard_dangling", 2, dec!(10))?;
    let paid = owner.transfer(&Transfer::new(w[0], w[1], dec!(1)))?;
    assert!(owner.verify()?.is_clean());
    let mut conn = owner.connection()?;
    conn.client().batch_execute(&format!(
        "BEGIN;
         SET LOCAL session_replication_role = replica;
         INSERT INTO wallet_ledger.transfers (from_account, to_account, amount) VALUES ({}, 999001, 3);
         INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version)
         VALUES (999002, {}, 0.01, 0.01, 999);
         COMMIT;",
        w[0].0, w[1].0
    ))?;
    drop(conn);
    let audit = owner.verify()?;
    let dangling: Vec<(String, String, i64)> = audit
        .violations
        .iter()
        .filter_map(|v| match v {
            Violation::DanglingReference { table, reference, missing, .. } => {
                Some((table.clone(), reference.clone(), *missing))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        dangling,
        [
            ("entries".to_string(), "transfer_id".to_string(), 999_002),
            ("transfers".into(), "to_account".into(), 999_001)
        ]
    );
    assert!(audit.violations.iter().any(|v| v.to_string().contains("999001, which does not exist")));
    let _ = paid;
    Ok(())
}

/// The reference triggers skip the rows the ledger's functions write (the point of migration
/// 12: no query per reference on a transfer) and check every direct write, counted by
/// PostgreSQL's own per-function statistics.
#[test]
fn the_functions_rows_skip_the_reference_check_and_direct_rows_meet_it() -> Result<()> {
    let (owner, _url, _, w) = common::funded("guard_skip", 2, dec!(10))?;
    let mut conn = owner.connection()?;
    let db = conn.client();
    db.batch_execute("SET track_functions = 'pl'")?;
    let checks = |db: &mut postgres::Client| -> Result<i64> {
        // Pending statistics reach shared memory when the backend next goes idle.
        db.batch_execute("SELECT pg_stat_force_next_flush()")?;
        db.batch_execute("SELECT pg_stat_clear_snapshot()")?;
        let sql =
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_user_functions WHERE funcname = 'check_references'";
        Ok(db.query_one(sql, &[])?.get(0))
    };
    let before = checks(db)?;
    for key in ["skip-1", "skip-2", "skip-3"] {
        let outcome: String = db
            .query_one(
                "SELECT outcome FROM wallet_ledger.transfer($1, $2, 1, $3, NULL, 0::smallint, 0)",
                &[&w[0].0, &w[1].0, &key],
            )?
            .get(0);
        assert_eq!(outcome, "ok");
    }
    assert_eq!(checks(db)?, before, "the functions' own rows ran the reference check");
    let touched = db.execute("UPDATE wallet_ledger.entries SET amount = amount WHERE account_id = $1", &[&w[1].0])?;
    assert!(touched >= 3);
    assert_eq!(checks(db)?, before + touched as i64, "a direct write skipped the reference check");
    drop(conn);
    assert!(owner.verify()?.is_clean());
    Ok(())
}

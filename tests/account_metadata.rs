//! Account metadata and external ids: stored and read back, refused when malformed or taken
//! (typed errors, nothing changed), and backed by the database's own constraints.

#[macro_use]
mod common;

use anyhow::Result;
use common::{ledger, snapshot};
use serde_json::json;
use wallet_ledger::limits::{EXTERNAL_ID_BYTES_MAX, METADATA_BYTES_MAX};
use wallet_ledger::{LedgerError, NewAccount};

#[test]
fn metadata_and_external_id_are_stored_and_read_back() -> Result<()> {
    let (l, _) = ledger("meta_roundtrip")?;
    l.define_currency("USD", 2)?;
    let meta = json!({"user_id": 42, "tier": "gold", "tags": ["a", "b"], "nested": {"x": null}});
    let opened = l.open_account(&NewAccount::new("USD").name("alice").external_id("user-42").metadata(meta.clone()))?;
    assert_eq!(opened.external_id.as_deref(), Some("user-42"));
    assert_eq!(opened.metadata, meta);
    assert_eq!(l.account(opened.id)?, opened);
    assert_eq!(l.find_account_by_external_id("user-42")?, Some(opened.clone()));
    assert_eq!(l.find_account_by_external_id("user-43")?, None);
    assert_eq!(l.find_account_by_external_id("")?, None);
    assert_eq!(l.find_account_by_external_id("a\0b")?, None);

    let plain = l.open_account(&NewAccount::new("USD"))?;
    assert_eq!(plain.external_id, None);
    assert_eq!(plain.metadata, json!({}));
    // NULL external ids do not collide with each other.
    l.open_account(&NewAccount::new("USD"))?;
    let longest = "x".repeat(EXTERNAL_ID_BYTES_MAX);
    assert_eq!(l.open_account(&NewAccount::new("USD").external_id(longest.clone()))?.external_id, Some(longest));
    Ok(())
}

#[test]
fn a_taken_external_id_is_refused() -> Result<()> {
    let (l, _) = ledger("meta_taken")?;
    l.define_currency("USD", 2)?;
    l.define_currency("EUR", 2)?;
    l.open_account(&NewAccount::new("USD").external_id("user-42"))?;
    let e = refused!(
        l,
        l.open_account(&NewAccount::new("EUR").external_id("user-42")),
        LedgerError::ExternalIdTaken { ref external_id } if external_id == "user-42"
    );
    assert_eq!(e.kind(), "external_id_taken");
    Ok(())
}

#[test]
fn malformed_metadata_and_external_ids_are_refused() -> Result<()> {
    let (l, _) = ledger("meta_malformed")?;
    l.define_currency("USD", 2)?;
    for bad in [json!(null), json!(1), json!("x"), json!([1, 2]), json!(true)] {
        refused!(
            l,
            l.open_account(&NewAccount::new("USD").metadata(bad)),
            LedgerError::InvalidInput { field: "metadata", .. }
        );
    }
    refused!(
        l,
        l.open_account(&NewAccount::new("USD").metadata(json!({"k": "nul\u{0}"}))),
        LedgerError::InvalidInput { field: "metadata", .. }
    );
    let over = json!({ "k": "x".repeat(METADATA_BYTES_MAX) });
    refused!(
        l,
        l.open_account(&NewAccount::new("USD").metadata(over)),
        LedgerError::InvalidInput { field: "metadata", .. }
    );
    // At the library's bound in compact JSON, but over it in PostgreSQL's text form (which adds
    // a space after the colon): the database's constraint refuses it, with the same error.
    let compact_at_limit = json!({ "k": "x".repeat(METADATA_BYTES_MAX - 8) });
    refused!(
        l,
        l.open_account(&NewAccount::new("USD").metadata(compact_at_limit)),
        LedgerError::InvalidInput { field: "metadata", .. }
    );
    for bad in [String::new(), "a\0b".to_string(), "x".repeat(EXTERNAL_ID_BYTES_MAX + 1)] {
        refused!(
            l,
            l.open_account(&NewAccount::new("USD").external_id(bad)),
            LedgerError::InvalidInput { field: "external id", .. }
        );
    }
    Ok(())
}

/// The constraints hold for writes that do not come through the library.
#[test]
fn the_database_refuses_bad_direct_writes() -> Result<()> {
    let (l, _) = ledger("meta_direct")?;
    l.define_currency("USD", 2)?;
    let a = l.open_account(&NewAccount::new("USD").external_id("taken"))?;
    let before = snapshot(&l)?;
    let mut conn = l.connection()?;
    let client = conn.client();
    let cases: [(&str, &str); 5] = [
        ("UPDATE wallet_ledger.accounts SET metadata = '[1]' WHERE id = $1", "accounts_metadata_object"),
        ("UPDATE wallet_ledger.accounts SET metadata = '\"x\"' WHERE id = $1", "accounts_metadata_object"),
        (
            "UPDATE wallet_ledger.accounts SET metadata = jsonb_build_object('k', repeat('x', 9000)) WHERE id = $1",
            "accounts_metadata_size",
        ),
        ("UPDATE wallet_ledger.accounts SET external_id = '' WHERE id = $1", "accounts_external_id_length"),
        ("INSERT INTO wallet_ledger.accounts (currency, external_id) SELECT 'USD', 'taken' WHERE $1::bigint IS NOT NULL", "accounts_external_id"),
    ];
    for (sql, constraint) in cases {
        let err = client.execute(sql, &[&a.id.0]).expect_err(sql);
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.constraint(), Some(constraint), "{sql}: {db}");
    }
    let err = client
        .execute("UPDATE wallet_ledger.accounts SET metadata = NULL WHERE id = $1", &[&a.id.0])
        .expect_err("null");
    assert!(err.as_db_error().is_some_and(|db| db.column() == Some("metadata")), "{err}");
    drop(conn);
    assert_eq!(before, snapshot(&l)?);
    Ok(())
}

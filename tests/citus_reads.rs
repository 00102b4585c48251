//! Issue 17's reads on a Citus cluster: metadata, lookups, listings, statements and balances as
//! of a time with accounts on both workers; external ids and internal-key lookups refused with
//! `Unsupported` (docs/citus.md). Skipped, with a printed line, on a machine without Citus.

mod citus_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use citus_common::{citus_url, funded_on_both_workers, Schema};
use rust_decimal_macros::dec;
use serde_json::json;
use wallet_ledger::{AccountFilter, AccountStatus, Hold, LedgerError, NewAccount, Transfer, TransferFilter};

#[test]
fn reads_work_across_workers() -> Result<()> {
    let Some(url) = citus_url("citus_reads") else { return Ok(()) };
    let schema = Schema::new(&url, "reads");
    let l = schema.ledger(8)?;
    let (issuer, groups) = funded_on_both_workers(&schema, &l, 2, dec!(100.00))?;
    let (a, b) = (groups[0][0], groups[1][0]);
    std::thread::sleep(Duration::from_millis(20));
    let start = SystemTime::now();
    let keyed = l.transfer(&Transfer::new(a, b, dec!(7.00)).idempotency_key("cross").memo("m"))?;
    l.transfer(&Transfer::new(b, a, dec!(2.00)))?;

    // Lookups.
    let record = l.find_transfer(keyed.transfer_id)?.expect("committed");
    assert_eq!(
        record.legs,
        vec![
            (a.min(b), if a < b { dec!(-7.00) } else { dec!(7.00) }),
            (a.max(b), if a < b { dec!(7.00) } else { dec!(-7.00) })
        ]
    );
    assert_eq!(record.idempotency_key.as_deref(), Some("cross"));
    assert_eq!(l.find_transfer_by_key("cross")?.map(|r| r.id), Some(keyed.transfer_id));
    assert_eq!(l.find_transfer_by_key("never")?, None);
    let internal = format!("~{}", "0190a8c2-0000-7000-8000-000000000000");
    let e = l.find_transfer_by_key(&internal).unwrap_err();
    assert!(matches!(e, LedgerError::Unsupported { .. }), "{e:?}");

    // Listings.
    let mine = l.list_transfers(&TransferFilter::new().account(a))?;
    assert_eq!(mine.items.len(), 3, "funding, the transfer out and the one back");
    let all = l.list_transfers(&TransferFilter::new().limit(2))?;
    assert_eq!(all.items.len(), 2);
    let rest = l.list_transfers(&TransferFilter::new().limit(100).after(all.next.expect("more")))?;
    assert_eq!(all.items.len() + rest.items.len(), 4 + 2, "four fundings and two transfers");
    let usd = l.list_accounts(&AccountFilter::new().currency("USD").limit(100))?;
    assert!(usd.items.len() >= 5);
    let tagged = l.open_account(&NewAccount::new("USD").name("tagged").metadata(json!({"tier": "gold"})))?;
    let gold = l.list_accounts(&AccountFilter::new().metadata(json!({"tier": "gold"})))?;
    assert_eq!(gold.items, vec![tagged.clone()]);
    assert_eq!(l.list_accounts(&AccountFilter::new().name_prefix("tag"))?.items, vec![tagged]);

    // Time.
    let later = SystemTime::now() + Duration::from_secs(3600);
    let s = l.statement(a, start, later)?;
    assert_eq!(
        (s.opening_balance, s.total_debits, s.total_credits, s.closing_balance),
        (dec!(100.00), dec!(7.00), dec!(2.00), dec!(95.00))
    );
    assert_eq!(l.balance_at(a, start)?, dec!(100.00));
    assert_eq!(l.balance_at(a, UNIX_EPOCH)?, dec!(0));
    assert_eq!(l.history_between(a, start, later, None, 10)?.len(), 2);
    assert_eq!(l.history(b, None, 10)?.len(), 3);

    // External ids cannot be kept unique across shards here.
    let e = l.open_account(&NewAccount::new("USD").external_id("user-1")).unwrap_err();
    assert!(matches!(e, LedgerError::Unsupported { .. }), "{e:?}");
    assert_eq!(l.find_account_by_external_id("user-1")?, None);
    let _ = issuer;
    assert!(l.verify()?.is_clean());
    Ok(())
}

/// Metadata on money movements is refused in Citus mode (the Citus transfer and hold functions
/// take none), nothing changed; movements without it work and read back `{}`; the listing
/// filters that need no join of entries with transfers answer, the others are refused.
#[test]
fn movement_metadata_is_refused_and_the_filters_answer() -> Result<()> {
    let Some(url) = citus_url("citus_movement_metadata") else { return Ok(()) };
    let schema = Schema::new(&url, "movement_meta");
    let l = schema.ledger(4)?;
    let (_issuer, groups) = funded_on_both_workers(&schema, &l, 1, dec!(100.00))?;
    let (a, b) = (groups[0][0], groups[1][0]);
    let count = |l: &wallet_ledger::Ledger| -> Result<usize> {
        Ok(l.list_transfers(&TransferFilter::new().limit(1000))?.items.len())
    };
    let before = count(&l)?;
    let meta = json!({"order": 1});
    let refusals = [
        l.transfer(&Transfer::new(a, b, dec!(1.00)).metadata(meta.clone())).map(|_| ()),
        l.hold(&Hold::new(a, b, dec!(1.00)).metadata(meta.clone())).map(|_| ()),
        {
            let mut conn = l.connection()?;
            let mut tx = conn.client().transaction()?;
            let r = l.transfer_in(&mut tx, &Transfer::new(a, b, dec!(1.00)).metadata(meta.clone())).map(|_| ());
            tx.rollback()?;
            r
        },
    ];
    for r in refusals {
        assert!(matches!(r, Err(LedgerError::Unsupported { .. })), "{r:?}");
    }
    assert_eq!(count(&l)?, before);
    assert_eq!(l.balance(a)?, dec!(100.00));

    let plain = l.transfer(&Transfer::new(a, b, dec!(1.00)).metadata(json!({})))?;
    assert_eq!(l.find_transfer(plain.transfer_id)?.expect("committed").metadata, json!({}));
    let h = l.hold(&Hold::new(b, a, dec!(2.00)))?;
    let captured = l.capture(h.hold_id, None)?;
    assert_eq!(l.find_transfer(captured.transfer_id)?.expect("committed").metadata, json!({}));

    assert!(l.list_transfers(&TransferFilter::new().metadata(meta.clone()))?.items.is_empty());
    assert!(l.list_transfers(&TransferFilter::new().reversals(true))?.items.is_empty());
    assert_eq!(l.list_transfers(&TransferFilter::new().reversals(false).limit(1000))?.items.len(), before + 2);
    let e = l.list_transfers(&TransferFilter::new().account(a).reversals(false)).unwrap_err();
    assert!(matches!(e, LedgerError::Unsupported { .. }), "{e:?}");
    let open = l.list_accounts(&AccountFilter::new().status(AccountStatus::Open).limit(1000))?;
    assert!(open.items.iter().any(|acc| acc.id == a) && open.items.iter().any(|acc| acc.id == b));
    assert!(l.list_accounts(&AccountFilter::new().status(AccountStatus::Frozen))?.items.is_empty());
    assert!(l.verify()?.is_clean());
    Ok(())
}

/// Issue 18's feed is refused on Citus (docs/citus.md), before anything is sent; migration 11
/// leaves the cluster's transfers, holds and audit working (its triggers are not created there).
#[test]
fn the_feed_is_refused_and_migration_11_leaves_the_cluster_working() -> Result<()> {
    let Some(url) = citus_url("citus_feed") else { return Ok(()) };
    let schema = Schema::new(&url, "feed");
    let l = schema.ledger(4)?;
    let (_issuer, groups) = funded_on_both_workers(&schema, &l, 1, dec!(100.00))?;
    let (a, b) = (groups[0][0], groups[1][0]);
    let refused = [
        l.changes(None, 10).map(|_| ()),
        l.consume("c", 10, |_, _| Ok(())).map(|_| ()),
        l.consumer_lag("c").map(|_| ()),
        l.consumers().map(|_| ()),
        l.feed_status().map(|_| ()),
    ];
    for r in refused {
        assert!(matches!(r, Err(LedgerError::Unsupported { .. })), "{r:?}");
    }
    l.transfer(&Transfer::new(a, b, dec!(3.00)))?;
    let h = l.hold(&Hold::new(b, a, dec!(1.00)))?;
    l.capture(h.hold_id, None)?;
    let mut conn = l.connection()?;
    let sql = conn.sql("SELECT count(*) FROM wallet_ledger.feed_events").into_owned();
    let events: i64 = conn.client().query_one(&sql, &[])?.get(0);
    assert_eq!(events, 0, "no feed triggers on Citus");
    assert_eq!(l.balance(a)?, dec!(98.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

/// Migration 12's write guard is not offered on Citus (docs/citus.md): `grant_access` and
/// `revoke_access` are refused before anything is sent, and the migration leaves the cluster's
/// functions as they were (running as their caller) and its transfers and audit working.
#[test]
fn the_write_guard_is_refused_and_migration_12_leaves_the_cluster_working() -> Result<()> {
    let Some(url) = citus_url("citus_guard") else { return Ok(()) };
    let schema = Schema::new(&url, "guard");
    let l = schema.ledger(4)?;
    let (_issuer, groups) = funded_on_both_workers(&schema, &l, 1, dec!(100.00))?;
    let (a, b) = (groups[0][0], groups[1][0]);
    for r in [l.grant_access("someone"), l.revoke_access("someone")] {
        assert!(matches!(r, Err(LedgerError::Unsupported { .. })), "{r:?}");
    }
    let mut conn = l.connection()?;
    let accounts = conn.sql("wallet_ledger.accounts").into_owned();
    let definers: i64 = conn
        .client()
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_class c ON c.relnamespace = p.pronamespace
              WHERE c.oid = $1::text::regclass AND p.prosecdef",
            &[&accounts],
        )?
        .get(0);
    assert_eq!(definers, 0, "migration 12 made definers on Citus");
    drop(conn);
    l.transfer(&Transfer::new(a, b, dec!(3.00)))?;
    assert_eq!(l.balance(b)?, dec!(103.00));
    assert!(l.verify()?.is_clean());
    Ok(())
}

//! Lookups and listings: a transfer by id and by key, accounts and transfers by filter, page by
//! page with keyset cursors.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use common::{funded, ledger};
use rust_decimal_macros::dec;
use serde_json::json;
use wallet_ledger::limits::LIST_PAGE_MAX;
use wallet_ledger::{
    AccountFilter, AccountId, AccountStatus, Cursor, Ledger, LedgerError, NewAccount, Page, Posting, Reversal,
    Transfer, TransferFilter, TransferId, TransferRecord,
};

#[test]
fn a_transfer_is_found_by_id_and_by_key() -> Result<()> {
    let (l, _, issuer, w) = funded("find_transfer", 3, dec!(100.00))?;
    let keyed = l.transfer(&Transfer::new(w[0], w[1], dec!(12.50)).idempotency_key("order-1").memo("lunch"))?;
    let record = l.find_transfer(keyed.transfer_id)?.expect("committed");
    assert_eq!(record.id, keyed.transfer_id);
    assert_eq!(record.legs, vec![(w[0], dec!(-12.50)), (w[1], dec!(12.50))]);
    assert_eq!(record.currency, "USD");
    assert_eq!(record.memo.as_deref(), Some("lunch"));
    assert_eq!(record.idempotency_key.as_deref(), Some("order-1"));
    assert_eq!(record.metadata, json!({}));
    assert_eq!((record.reverses, record.reversed), (None, dec!(0)));
    assert_eq!(l.find_transfer_by_key("order-1")?, Some(record.clone()));

    // A keyless transfer: found by id, and its internal key is not shown as the caller's.
    let keyless = l.transfer(&Transfer::new(w[2], issuer, dec!(1.00)))?;
    let record = l.find_transfer(keyless.transfer_id)?.expect("committed");
    assert_eq!(record.idempotency_key, None);
    assert_eq!(record.legs, vec![(issuer, dec!(1.00)), (w[2], dec!(-1.00))]);

    // A posting: one leg per account, from its entries.
    let posted = l.post(
        &Posting::new().leg(w[0], dec!(-3.00)).leg(w[1], dec!(2.00)).leg(w[2], dec!(1.00)).idempotency_key("split"),
    )?;
    let record = l.find_transfer_by_key("split")?.expect("committed");
    assert_eq!(record.id, posted.transfer_id);
    assert_eq!(record.legs, vec![(w[0], dec!(-3.00)), (w[1], dec!(2.00)), (w[2], dec!(1.00))]);

    assert_eq!(l.find_transfer(TransferId(987_654))?, None);
    assert_eq!(l.find_transfer_by_key("never-used")?, None);
    assert_eq!(l.find_transfer_by_key("")?, None);
    assert_eq!(l.find_transfer_by_key("nul\0")?, None);
    Ok(())
}

/// Every page of a listing, following the cursors; checks each page's size and that the last
/// page, and only it, has no cursor.
fn all_pages<T>(limit: u32, mut page: impl FnMut(Option<Cursor>) -> Result<Page<T>, LedgerError>) -> Result<Vec<T>> {
    let (mut items, mut cursor) = (Vec::new(), None);
    loop {
        let p = page(cursor)?;
        assert!(p.items.len() <= limit as usize);
        if p.next.is_some() {
            assert_eq!(p.items.len(), limit as usize, "a page before the end is full");
        }
        items.extend(p.items);
        match p.next {
            Some(next) => cursor = Some(next.to_string().parse()?), // cursors travel as text
            None => return Ok(items),
        }
    }
}

fn ids(records: &[TransferRecord]) -> Vec<TransferId> {
    records.iter().map(|r| r.id).collect()
}

#[test]
fn transfers_are_listed_page_by_page() -> Result<()> {
    let (l, _, issuer, w) = funded("list_transfers", 4, dec!(100.00))?;
    for i in 0..23 {
        l.transfer(&Transfer::new(w[i % 4], w[(i + 1) % 4], dec!(1.00)))?;
    }
    let all = all_pages(5, |after| {
        let mut f = TransferFilter::new().limit(5);
        if let Some(c) = after {
            f = f.after(c);
        }
        l.list_transfers(&f)
    })?;
    assert_eq!(all.len(), 4 + 23);
    let mut sorted = ids(&all);
    sorted.sort();
    assert_eq!(ids(&all), sorted, "oldest first (ids follow time in one thread)");
    assert_eq!(ids(&all).into_iter().collect::<HashSet<_>>().len(), all.len(), "no transfer twice");

    // One account: its funding and every transfer it took part in, in its chain's order.
    let mine = all_pages(3, |after| {
        let mut f = TransferFilter::new().account(w[1]).limit(3);
        if let Some(c) = after {
            f = f.after(c);
        }
        l.list_transfers(&f)
    })?;
    let expected: Vec<_> = all.iter().filter(|r| r.legs.iter().any(|(a, _)| *a == w[1])).map(|r| r.id).collect();
    assert_eq!(ids(&mine), expected);
    let history = l.history(w[1], None, 100)?;
    assert_eq!(ids(&mine), history.iter().map(|e| e.transfer_id).collect::<Vec<_>>());
    assert!(l.list_transfers(&TransferFilter::new().account(issuer))?.items.len() == 4);
    assert!(l.list_transfers(&TransferFilter::new().account(AccountId(987_654)))?.items.is_empty());

    // A time window: nothing before the ledger, nothing after now, everything in between.
    let now = SystemTime::now() + Duration::from_secs(1);
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    assert!(l.list_transfers(&TransferFilter::new().created_before(long_ago))?.items.is_empty());
    assert!(l.list_transfers(&TransferFilter::new().created_after(now))?.items.is_empty());
    assert!(l.list_transfers(&TransferFilter::new().account(w[1]).created_after(now))?.items.is_empty());
    let window =
        l.list_transfers(&TransferFilter::new().created_after(long_ago).created_before(now).limit(LIST_PAGE_MAX))?;
    assert_eq!(ids(&window.items), ids(&all));
    assert!(window.next.is_none());
    let middle = all[10].created_at;
    let later = l.list_transfers(&TransferFilter::new().created_after(middle).limit(LIST_PAGE_MAX))?;
    assert!(later.items.iter().all(|r| r.created_at > middle));
    assert!(later.items.len() < all.len());
    Ok(())
}

#[test]
fn accounts_are_listed_by_every_filter() -> Result<()> {
    let (l, _) = ledger("list_accounts")?;
    l.define_currency("USD", 2)?;
    l.define_currency("EUR", 2)?;
    let start = SystemTime::now() - Duration::from_secs(1);
    let mut opened = Vec::new();
    for i in 0..17 {
        let currency = if i % 3 == 0 { "EUR" } else { "USD" };
        let tier = if i % 2 == 0 { "gold" } else { "basic" };
        let name = if i % 4 == 0 { format!("shop-{i}") } else { format!("user-{i}") };
        let new = NewAccount::new(currency).name(name).metadata(json!({"tier": tier, "i": i}));
        opened.push(l.open_account(&new)?);
    }
    let list = |filter: AccountFilter, limit: u32| {
        all_pages(limit, |after| {
            let mut f = filter.clone().limit(limit);
            if let Some(c) = after {
                f = f.after(c);
            }
            l.list_accounts(&f)
        })
    };
    let expect = |keep: &dyn Fn(usize) -> bool| {
        opened.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, a)| a.clone()).collect::<Vec<_>>()
    };
    assert_eq!(list(AccountFilter::new(), 4)?, opened);
    assert_eq!(list(AccountFilter::new().currency("EUR"), 2)?, expect(&|i| i % 3 == 0));
    assert_eq!(list(AccountFilter::new().metadata(json!({"tier": "gold"})), 3)?, expect(&|i| i % 2 == 0));
    assert_eq!(list(AccountFilter::new().name_prefix("shop-"), 2)?, expect(&|i| i % 4 == 0));
    assert_eq!(list(AccountFilter::new().name_prefix("shop-1"), 2)?, expect(&|i| i == 12 || i == 16));
    assert_eq!(
        list(AccountFilter::new().currency("USD").metadata(json!({"tier": "gold"})).name_prefix("user"), 1)?,
        expect(&|i| i % 3 != 0 && i % 2 == 0 && i % 4 != 0)
    );
    assert_eq!(list(AccountFilter::new().name_prefix("%"), 5)?, vec![], "a prefix is not a LIKE pattern");
    assert_eq!(list(AccountFilter::new().metadata(json!({})), 10)?, opened, "every object contains {{}}");
    assert_eq!(list(AccountFilter::new().opened_after(start), 10)?, opened);
    assert_eq!(list(AccountFilter::new().opened_before(start), 10)?, vec![]);
    let middle = opened[8].created_at;
    let after_middle = list(AccountFilter::new().opened_after(middle), 10)?;
    assert!(after_middle.iter().all(|a| a.created_at > middle) && after_middle.len() < opened.len());
    Ok(())
}

#[test]
fn bad_filters_are_refused() -> Result<()> {
    let (l, _, _, w) = funded("list_refusals", 2, dec!(10.00))?;
    let accounts_cursor = l.list_accounts(&AccountFilter::new().limit(1))?.next.expect("more than one account");
    let transfers_cursor = l.list_transfers(&TransferFilter::new().limit(1))?.next.expect("more than one transfer");
    refused!(
        l,
        l.list_transfers(&TransferFilter::new().after(accounts_cursor)),
        LedgerError::InvalidInput { field: "after", .. }
    );
    refused!(
        l,
        l.list_transfers(&TransferFilter::new().account(w[0]).after(transfers_cursor)),
        LedgerError::InvalidInput { field: "after", .. }
    );
    refused!(
        l,
        l.list_accounts(&AccountFilter::new().after(transfers_cursor)),
        LedgerError::InvalidInput { field: "after", .. }
    );
    refused!(l, l.list_accounts(&AccountFilter::new().limit(0)), LedgerError::InvalidInput { field: "limit", .. });
    refused!(
        l,
        l.list_transfers(&TransferFilter::new().limit(LIST_PAGE_MAX + 1)),
        LedgerError::InvalidInput { field: "limit", .. }
    );
    refused!(l, l.list_accounts(&AccountFilter::new().metadata(json!("gold"))), LedgerError::InvalidInput { .. });
    refused!(l, l.list_accounts(&AccountFilter::new().currency("not a code")), LedgerError::InvalidInput { .. });
    assert!("e.x.1".parse::<Cursor>().is_err());
    Ok(())
}

/// Reads take no lock a transfer waits for: with a listing, a lookup and a statement in an open
/// transaction of their own, a transfer on the same accounts still goes through at once.
#[test]
fn reads_take_no_lock_a_transfer_waits_for() -> Result<()> {
    let (l, url, _, w) = funded("reads_no_lock", 2, dec!(10.00))?;
    let r = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key("k"))?;
    let mut reader = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut tx = reader.transaction()?;
    let reads = [include_str!("../sql/queries/balance_at.sql"), include_str!("../sql/queries/statement.sql")];
    tx.query(reads[0], &[&w[0].0, &SystemTime::now()])?;
    tx.query(reads[1], &[&w[0].0, &std::time::UNIX_EPOCH, &SystemTime::now()])?;
    tx.query("SELECT * FROM wallet_ledger.accounts WHERE id = $1", &[&w[0].0])?;
    let nowait = Ledger::builder(&url).lock_wait(wallet_ledger::LockWait::NoWait).build()?;
    nowait.transfer(&Transfer::new(w[0], w[1], dec!(1.00)))?;
    drop(tx);
    assert!(l.find_transfer(r.transfer_id)?.is_some());
    Ok(())
}

#[test]
fn transfers_are_listed_with_or_without_reversals() -> Result<()> {
    let (l, _, issuer, w) = funded("list_reversals", 3, dec!(100.00))?;
    let mut payments = Vec::new();
    let mut refunds = Vec::new();
    for i in 0..6 {
        let paid = l.transfer(&Transfer::new(w[i % 3], w[(i + 1) % 3], dec!(5.00)))?;
        payments.push(paid.transfer_id);
        if i % 2 == 0 {
            refunds.push(l.reverse(&Reversal::of(paid.transfer_id).amount(dec!(1.00)))?.transfer_id);
        }
    }
    let reversals = |filter: TransferFilter, limit: u32| {
        all_pages(limit, |after| {
            let mut f = filter.clone().limit(limit);
            if let Some(c) = after {
                f = f.after(c);
            }
            l.list_transfers(&f)
        })
    };
    let every = ids(&reversals(TransferFilter::new(), 1000)?);
    let only = reversals(TransferFilter::new().reversals(true), 2)?;
    assert_eq!(ids(&only), refunds);
    assert!(only.iter().all(|t| t.reverses.is_some()));
    let without = reversals(TransferFilter::new().reversals(false), 2)?;
    assert!(without.iter().all(|t| t.reverses.is_none()));
    let expected: Vec<TransferId> = every.iter().copied().filter(|id| !refunds.contains(id)).collect();
    assert_eq!(ids(&without), expected);
    assert_eq!(without.len() + only.len(), every.len());
    // With one account: its chain, filtered.
    let of_w1 = ids(&reversals(TransferFilter::new().account(w[1]), 1000)?);
    let w1_refunds = ids(&reversals(TransferFilter::new().account(w[1]).reversals(true), 1)?);
    let w1_plain = ids(&reversals(TransferFilter::new().account(w[1]).reversals(false), 2)?);
    assert_eq!(w1_refunds, of_w1.iter().copied().filter(|id| refunds.contains(id)).collect::<Vec<_>>());
    assert_eq!(w1_plain, of_w1.iter().copied().filter(|id| !refunds.contains(id)).collect::<Vec<_>>());
    assert!(!w1_refunds.is_empty() && !w1_plain.is_empty());
    // Combined with time bounds.
    let cut = l.find_transfer(refunds[1])?.expect("committed").created_at;
    let later = ids(&reversals(TransferFilter::new().reversals(true).created_after(cut), 1)?);
    assert_eq!(later, refunds[2..].to_vec());
    let _ = (issuer, payments);
    Ok(())
}

#[test]
fn accounts_are_listed_by_status() -> Result<()> {
    let (l, _) = ledger("list_status")?;
    l.define_currency("USD", 2)?;
    l.define_currency("EUR", 2)?;
    let mut opened = Vec::new();
    for i in 0..11 {
        let currency = if i % 2 == 0 { "USD" } else { "EUR" };
        opened.push(l.open_account(&NewAccount::new(currency).name(format!("a{i}")))?.id);
    }
    for i in [1, 4, 7, 8] {
        l.freeze(opened[i])?;
    }
    for i in [2, 9] {
        l.close(opened[i])?;
    }
    let list = |filter: AccountFilter, limit: u32| -> Result<Vec<AccountId>> {
        let accounts = all_pages(limit, |after| {
            let mut f = filter.clone().limit(limit);
            if let Some(c) = after {
                f = f.after(c);
            }
            l.list_accounts(&f)
        })?;
        Ok(accounts.into_iter().map(|a| a.id).collect())
    };
    let pick = |keep: &[usize]| keep.iter().map(|&i| opened[i]).collect::<Vec<_>>();
    assert_eq!(list(AccountFilter::new().status(AccountStatus::Frozen), 2)?, pick(&[1, 4, 7, 8]));
    assert_eq!(list(AccountFilter::new().status(AccountStatus::Closed), 1)?, pick(&[2, 9]));
    assert_eq!(list(AccountFilter::new().status(AccountStatus::Open), 2)?, pick(&[0, 3, 5, 6, 10]));
    assert_eq!(list(AccountFilter::new().status(AccountStatus::Frozen).currency("USD"), 1)?, pick(&[4, 8]));
    assert_eq!(list(AccountFilter::new().status(AccountStatus::Open).currency("EUR"), 1)?, pick(&[3, 5]));
    assert_eq!(list(AccountFilter::new().status(AccountStatus::Closed).name_prefix("a9"), 1)?, pick(&[9]));
    assert_eq!(list(AccountFilter::new().status(AccountStatus::Frozen).metadata(json!({})), 3)?, pick(&[1, 4, 7, 8]));
    let frozen = l.list_accounts(&AccountFilter::new().status(AccountStatus::Frozen))?;
    assert!(frozen.items.iter().all(|a| a.status == AccountStatus::Frozen));
    Ok(())
}

/// Each filter's statement can be served by its index: with sequential scans off, PostgreSQL
/// still finds an index path for the generic plan (a partial index whose predicate the query
/// does not imply could not be used, and the plan would fall back to a sequential scan).
#[test]
fn every_new_filter_is_served_by_an_index() -> Result<()> {
    let (l, _, _, w) = funded("list_plans", 2, dec!(10.00))?;
    l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).metadata(json!({"order": 1})))?;
    let tail = include_str!("../sql/queries/transfer_records.sql");
    let listing = "timestamptz, bigint, timestamptz, bigint, boolean, jsonb";
    let cases: [(String, &str, &str, &str); 5] = [
        (
            format!("{}{tail}", include_str!("../sql/queries/list_transfers_by_metadata.sql")),
            listing,
            "NULL, NULL, NULL, 11, NULL, '{\"order\": 1}'",
            "transfers_metadata",
        ),
        (
            format!("{}{tail}", include_str!("../sql/queries/list_reversals.sql")),
            listing,
            "NULL, NULL, NULL, 11, true, NULL",
            "transfers_reversal_listing",
        ),
        (
            format!("{}{tail}", include_str!("../sql/queries/list_transfers.sql")),
            listing,
            "NULL, NULL, NULL, 11, false, NULL",
            "transfers_listing",
        ),
        (
            format!("{}{tail}", include_str!("../sql/queries/list_account_transfers_filtered.sql")),
            "bigint, timestamptz, bigint, timestamptz, bigint, boolean, jsonb",
            "2, NULL, NULL, NULL, 11, false, '{\"order\": 1}'",
            "entries_account_time",
        ),
        (
            include_str!("../sql/queries/list_accounts_by_status.sql").to_string(),
            "timestamptz, bigint, timestamptz, text, text, jsonb, bigint, text",
            "NULL, NULL, NULL, NULL, NULL, NULL, 11, 'frozen'",
            "accounts_status_listing",
        ),
    ];
    let mut conn = l.connection()?;
    let client = conn.client();
    client.batch_execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")?;
    for (i, (sql, types, args, index)) in cases.iter().enumerate() {
        client.batch_execute(&format!("PREPARE q{i}({types}) AS {sql}"))?;
        let plan: Vec<String> =
            client.query(&format!("EXPLAIN EXECUTE q{i}({args})"), &[])?.iter().map(|r| r.get(0)).collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "plan {i} does not use {index}:\n{plan}");
        assert!(!plan.contains("Seq Scan"), "plan {i} scans a table:\n{plan}");
        let rows = client.query(&format!("EXECUTE q{i}({args})"), &[])?;
        assert_eq!(rows.len(), [1, 0, 3, 1, 0][i], "plan {i}: rows");
        client.batch_execute(&format!("DEALLOCATE q{i}"))?;
    }
    client.batch_execute("RESET enable_seqscan; RESET plan_cache_mode")?;
    Ok(())
}

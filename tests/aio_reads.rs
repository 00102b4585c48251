//! The async door's reads and account rules (listings, lookups, statements, states and limits)
//! against the synchronous door on the same database: the same answers, the same refusals.
//!
//! The runtime is built as `#[tokio::test]` builds it (`Builder`), since the dev-dependency on
//! tokio leaves out `macros`. Synchronous calls are made outside `block_on`, where they belong.

use std::future::Future;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use postgres::{Client, NoTls};
use rust_decimal_macros::dec;
use serde_json::json;
use tokio::runtime::{Builder, Runtime};
use wallet_ledger::{
    aio, AccountFilter, AccountId, AccountStatus, EntryId, Ledger, LedgerError, LockWait, NewAccount, Reversal,
    Transfer, TransferFilter, TransferId,
};

/// Both doors on one fresh database, and the runtime the async one runs on.
struct Doors {
    runtime: Runtime,
    url: String,
    sync: Ledger,
    aio: aio::Ledger,
}

impl Doors {
    fn new(test: &str) -> Result<Doors> {
        let url = wallet_ledger_embedded::fresh_database(test)?;
        let sync = Ledger::connect(&url)?;
        let runtime = Builder::new_multi_thread().enable_all().build()?;
        let aio = runtime.block_on(aio::Ledger::connect(&url))?;
        Ok(Doors { runtime, url, sync, aio })
    }

    /// Runs one async call to its end.
    fn block<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    /// An async ledger on the same database that never waits for a row lock.
    fn aio_nowait(&self) -> Result<aio::Ledger> {
        Ok(self.block(aio::Ledger::builder(&self.url).lock_wait(LockWait::NoWait).build())?)
    }
}

/// A USD ledger with an unbounded issuer and `n` wallets funded with 100.00 each.
fn funded(doors: &Doors, n: usize) -> Result<(AccountId, Vec<AccountId>)> {
    doors.sync.define_currency("USD", 2)?;
    let issuer = doors.sync.open_account(&NewAccount::new("USD").name("issuer").unbounded())?.id;
    let mut wallets = Vec::with_capacity(n);
    for i in 0..n {
        let tier = if i % 2 == 0 { "gold" } else { "basic" };
        let new = NewAccount::new("USD")
            .name(format!("w{i}"))
            .external_id(format!("user-{i}"))
            .metadata(json!({"tier": tier}));
        let id = doors.sync.open_account(&new)?.id;
        doors.sync.transfer(&Transfer::new(issuer, id, dec!(100.00)))?;
        wallets.push(id);
    }
    Ok((issuer, wallets))
}

/// Both doors' refusals of one call: the same kind and the same text.
fn same_refusal<T: std::fmt::Debug>(aio: Result<T, LedgerError>, sync: Result<T, LedgerError>) -> LedgerError {
    let (a, s) = match (aio, sync) {
        (Err(a), Err(s)) => (a, s),
        other => panic!("expected two refusals, got {other:?}"),
    };
    assert_eq!((a.kind(), a.to_string()), (s.kind(), s.to_string()));
    a
}

#[test]
fn listings_page_as_the_sync_door_does() -> Result<()> {
    let doors = Doors::new("aio_reads_listings")?;
    let (issuer, w) = funded(&doors, 5)?;
    let paid = doors.sync.transfer(&Transfer::new(w[0], w[1], dec!(30.00)).metadata(json!({"order": 7})))?;
    doors.sync.transfer(&Transfer::new(w[1], w[2], dec!(5.00)).metadata(json!({"order": 8})))?;
    doors.sync.reverse(&Reversal::of(paid.transfer_id).amount(dec!(10.00)).metadata(json!({"order": 7})))?;
    doors.sync.freeze(w[3])?;

    let account_filters = [
        AccountFilter::new(),
        AccountFilter::new().limit(2),
        AccountFilter::new().metadata(json!({"tier": "gold"})).limit(2),
        AccountFilter::new().name_prefix("w").limit(3),
        AccountFilter::new().currency("USD").limit(4),
        AccountFilter::new().status(AccountStatus::Frozen),
        AccountFilter::new().status(AccountStatus::Open).limit(2),
    ];
    for first in account_filters {
        // every page, following the cursors of the async door's own pages
        let (mut filter, mut pages) = (first.clone(), 0);
        loop {
            let page = doors.block(doors.aio.list_accounts(&filter))?;
            assert_eq!(page, doors.sync.list_accounts(&filter)?, "{filter:?}");
            pages += 1;
            match page.next {
                Some(cursor) => filter = filter.after(cursor),
                None => break,
            }
        }
        assert!(pages >= 1);
    }
    let all = doors.block(doors.aio.list_accounts(&AccountFilter::new()))?;
    assert_eq!(all.items.len(), 6);
    let frozen = doors.block(doors.aio.list_accounts(&AccountFilter::new().status(AccountStatus::Frozen)))?;
    assert_eq!(frozen.items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![w[3]]);

    let transfer_filters = [
        TransferFilter::new(),
        TransferFilter::new().limit(2),
        TransferFilter::new().account(w[1]).limit(1),
        TransferFilter::new().account(w[0]).metadata(json!({"order": 7})),
        TransferFilter::new().account(issuer).reversals(false).limit(3),
        TransferFilter::new().metadata(json!({"order": 7})).limit(1),
        TransferFilter::new().reversals(true),
        TransferFilter::new().created_after(SystemTime::now() - Duration::from_secs(3600)).limit(4),
    ];
    for first in transfer_filters {
        let mut filter = first.clone();
        loop {
            let page = doors.block(doors.aio.list_transfers(&filter))?;
            assert_eq!(page, doors.sync.list_transfers(&filter)?, "{filter:?}");
            match page.next {
                Some(cursor) => filter = filter.after(cursor),
                None => break,
            }
        }
    }
    let order_7 = doors.block(doors.aio.list_transfers(&TransferFilter::new().metadata(json!({"order": 7}))))?;
    assert_eq!(order_7.items.len(), 2);
    let reversals = doors.block(doors.aio.list_transfers(&TransferFilter::new().reversals(true)))?;
    assert_eq!(reversals.items.iter().map(|t| t.reverses).collect::<Vec<_>>(), vec![Some(paid.transfer_id)]);

    // refusals: a bad limit, a cursor of another listing
    let bad = AccountFilter::new().limit(0);
    let e = same_refusal(doors.block(doors.aio.list_accounts(&bad)), doors.sync.list_accounts(&bad));
    assert!(matches!(e, LedgerError::InvalidInput { field: "limit", .. }), "{e:?}");
    let bad = TransferFilter::new().limit(0);
    let e = same_refusal(doors.block(doors.aio.list_transfers(&bad)), doors.sync.list_transfers(&bad));
    assert!(matches!(e, LedgerError::InvalidInput { field: "limit", .. }), "{e:?}");
    let cursor = doors.block(doors.aio.list_transfers(&TransferFilter::new().limit(1)))?.next.expect("more pages");
    let bad = AccountFilter::new().after(cursor);
    let e = same_refusal(doors.block(doors.aio.list_accounts(&bad)), doors.sync.list_accounts(&bad));
    assert!(matches!(e, LedgerError::InvalidInput { .. }), "{e:?}");
    Ok(())
}

#[test]
fn lookups_find_what_the_sync_door_finds() -> Result<()> {
    let doors = Doors::new("aio_reads_lookups")?;
    let (issuer, w) = funded(&doors, 2)?;
    let keyed = doors.sync.transfer(&Transfer::new(issuer, w[0], dec!(7.00)).idempotency_key("order-1"))?;
    let unkeyed = doors.sync.transfer(&Transfer::new(w[0], w[1], dec!(2.00)))?;

    for external_id in ["user-0", "user-1", "user-9", "", "nul\0inside"] {
        let found = doors.block(doors.aio.find_account_by_external_id(external_id))?;
        assert_eq!(found, doors.sync.find_account_by_external_id(external_id)?, "{external_id:?}");
    }
    let found = doors.block(doors.aio.find_account_by_external_id("user-1"))?;
    assert_eq!(found.map(|a| a.id), Some(w[1]));
    assert_eq!(doors.block(doors.aio.find_account_by_external_id("user-9"))?, None);

    for id in [keyed.transfer_id, unkeyed.transfer_id, TransferId(i64::MAX)] {
        let found = doors.block(doors.aio.find_transfer(id))?;
        assert_eq!(found, doors.sync.find_transfer(id)?, "{id:?}");
    }
    let record = doors.block(doors.aio.find_transfer(unkeyed.transfer_id))?.expect("committed");
    assert_eq!(record.legs, vec![(w[0], dec!(-2.00)), (w[1], dec!(2.00))]);
    assert_eq!(record.idempotency_key, None);
    assert_eq!(doors.block(doors.aio.find_transfer(TransferId(i64::MAX)))?, None);

    for key in ["order-1", "order-2", "", "nul\0inside"] {
        let found = doors.block(doors.aio.find_transfer_by_key(key))?;
        assert_eq!(found, doors.sync.find_transfer_by_key(key)?, "{key:?}");
    }
    let record = doors.block(doors.aio.find_transfer_by_key("order-1"))?.expect("committed");
    assert_eq!((record.id, record.idempotency_key.as_deref()), (keyed.transfer_id, Some("order-1")));
    assert_eq!(doors.block(doors.aio.find_transfer_by_key("order-2"))?, None);
    Ok(())
}

#[test]
fn statements_read_as_the_sync_door_reads() -> Result<()> {
    let doors = Doors::new("aio_reads_statements")?;
    let (issuer, w) = funded(&doors, 2)?;
    let from = SystemTime::now();
    std::thread::sleep(Duration::from_millis(5));
    for cents in [100, 200, 300, 400, 500] {
        doors.sync.transfer(&Transfer::new(issuer, w[0], rust_decimal::Decimal::new(cents, 2)))?;
    }
    doors.sync.transfer(&Transfer::new(w[0], w[1], dec!(1.50)))?;
    let to = SystemTime::now() + Duration::from_secs(1);
    let missing = AccountId(i64::MAX);

    for instant in [from - Duration::from_secs(3600), from, to] {
        for account in [w[0], w[1], issuer] {
            let balance = doors.block(doors.aio.balance_at(account, instant))?;
            assert_eq!(balance, doors.sync.balance_at(account, instant)?);
        }
    }
    assert_eq!(doors.block(doors.aio.balance_at(w[0], from))?, dec!(100.00));
    assert_eq!(doors.block(doors.aio.balance_at(w[0], to))?, dec!(113.50));
    assert_eq!(doors.block(doors.aio.balance_at(w[0], from - Duration::from_secs(3600)))?, dec!(0));

    let statement = doors.block(doors.aio.statement(w[0], from, to))?;
    assert_eq!(statement, doors.sync.statement(w[0], from, to)?);
    assert_eq!((statement.opening_balance, statement.closing_balance), (dec!(100.00), dec!(113.50)));
    assert_eq!((statement.total_credits, statement.total_debits, statement.entry_count), (dec!(15.00), dec!(1.50), 6));

    // every page of the period, after each entry of the async door's own pages
    let mut after: Option<EntryId> = None;
    let mut amounts = Vec::new();
    loop {
        let page = doors.block(doors.aio.history_between(w[0], from, to, after, 2))?;
        assert_eq!(page, doors.sync.history_between(w[0], from, to, after, 2)?, "after {after:?}");
        amounts.extend(page.iter().map(|e| e.amount));
        match page.last() {
            Some(entry) if page.len() == 2 => after = Some(entry.id),
            _ => break,
        }
    }
    assert_eq!(amounts, vec![dec!(1.00), dec!(2.00), dec!(3.00), dec!(4.00), dec!(5.00), dec!(-1.50)]);
    let empty = doors.block(doors.aio.history_between(w[1], to, to + Duration::from_secs(1), None, 10))?;
    assert!(empty.is_empty());

    // refusals: no such account, a bad limit, a period that ends before it starts, a cursor
    // entry of another account
    let e = same_refusal(doors.block(doors.aio.balance_at(missing, to)), doors.sync.balance_at(missing, to));
    assert!(matches!(e, LedgerError::AccountNotFound { account } if account == missing), "{e:?}");
    let e = same_refusal(doors.block(doors.aio.statement(missing, from, to)), doors.sync.statement(missing, from, to));
    assert!(matches!(e, LedgerError::AccountNotFound { account } if account == missing), "{e:?}");
    let e = same_refusal(
        doors.block(doors.aio.history_between(missing, from, to, None, 10)),
        doors.sync.history_between(missing, from, to, None, 10),
    );
    assert!(matches!(e, LedgerError::AccountNotFound { account } if account == missing), "{e:?}");
    let e = same_refusal(
        doors.block(doors.aio.history_between(w[0], from, to, None, 0)),
        doors.sync.history_between(w[0], from, to, None, 0),
    );
    assert!(matches!(e, LedgerError::InvalidInput { field: "limit", .. }), "{e:?}");
    let e = same_refusal(doors.block(doors.aio.statement(w[0], to, from)), doors.sync.statement(w[0], to, from));
    assert!(matches!(e, LedgerError::InvalidInput { .. }), "{e:?}");
    let e = same_refusal(
        doors.block(doors.aio.history_between(w[0], to, from, None, 10)),
        doors.sync.history_between(w[0], to, from, None, 10),
    );
    assert!(matches!(e, LedgerError::InvalidInput { .. }), "{e:?}");
    let foreign = doors.sync.history(issuer, None, 1)?[0].id;
    let e = same_refusal(
        doors.block(doors.aio.history_between(w[0], from, to, Some(foreign), 10)),
        doors.sync.history_between(w[0], from, to, Some(foreign), 10),
    );
    assert!(matches!(e, LedgerError::InvalidInput { field: "after", .. }), "{e:?}");
    Ok(())
}

#[test]
fn states_and_limits_change_as_through_the_sync_door() -> Result<()> {
    let doors = Doors::new("aio_reads_states")?;
    let (issuer, w) = funded(&doors, 3)?;
    let before = doors.aio.stats();

    let frozen = doors.block(doors.aio.freeze(w[0]))?;
    assert_eq!(frozen.status, AccountStatus::Frozen);
    assert_eq!(frozen, doors.sync.account(w[0])?);
    let again = doors.block(doors.aio.freeze(w[0]))?;
    assert_eq!(again.status, AccountStatus::Frozen);
    let e = doors.sync.transfer(&Transfer::new(w[0], w[1], dec!(1.00))).unwrap_err();
    assert!(matches!(e, LedgerError::AccountFrozen { .. }), "{e:?}");
    let open = doors.block(doors.aio.unfreeze(w[0]))?;
    assert_eq!(open.status, AccountStatus::Open);
    assert_eq!(open, doors.sync.account(w[0])?);

    let floor = doors.block(doors.aio.set_min_balance(w[0], Some(dec!(-20.00))))?;
    assert_eq!(floor.min_balance, Some(dec!(-20.00)));
    assert_eq!(floor, doors.sync.account(w[0])?);
    let ceiling = doors.block(doors.aio.set_max_balance(w[0], Some(dec!(150.00))))?;
    assert_eq!((ceiling.min_balance, ceiling.max_balance), (Some(dec!(-20.00)), Some(dec!(150.00))));
    assert_eq!(ceiling, doors.sync.account(w[0])?);
    let unbounded = doors.block(doors.aio.set_min_balance(w[0], None))?;
    assert_eq!((unbounded.min_balance, unbounded.max_balance), (None, Some(dec!(150.00))));
    let uncapped = doors.block(doors.aio.set_max_balance(w[0], None))?;
    assert_eq!((uncapped.min_balance, uncapped.max_balance), (None, None));
    assert_eq!(uncapped, doors.sync.account(w[0])?);

    // refusals, each the sync door's: limits the balance is already outside, malformed limits
    // (refused before anything is sent), a non-empty close, no such account, a closed account
    let e = same_refusal(
        doors.block(doors.aio.set_max_balance(w[1], Some(dec!(50.00)))),
        doors.sync.set_max_balance(w[1], Some(dec!(50.00))),
    );
    assert!(matches!(e, LedgerError::LimitBreached { account, .. } if account == w[1]), "{e:?}");
    let e = same_refusal(
        doors.block(doors.aio.set_min_balance(w[1], Some(dec!(1.00)))),
        doors.sync.set_min_balance(w[1], Some(dec!(1.00))),
    );
    assert!(matches!(e, LedgerError::InvalidAmount { .. }), "{e:?}");
    let e = same_refusal(
        doors.block(doors.aio.set_max_balance(w[1], Some(dec!(-1.00)))),
        doors.sync.set_max_balance(w[1], Some(dec!(-1.00))),
    );
    assert!(matches!(e, LedgerError::InvalidAmount { .. }), "{e:?}");
    let e = same_refusal(
        doors.block(doors.aio.set_min_balance(w[1], Some(dec!(-1.001)))),
        doors.sync.set_min_balance(w[1], Some(dec!(-1.001))),
    );
    assert!(matches!(e, LedgerError::InvalidAmount { .. }), "{e:?}");
    let e = same_refusal(doors.block(doors.aio.close(w[1])), doors.sync.close(w[1]));
    assert!(matches!(e, LedgerError::AccountNotEmpty { balance, .. } if balance == dec!(100.00)), "{e:?}");
    let missing = AccountId(i64::MAX);
    for action in ["freeze", "unfreeze", "close", "set_min_balance", "set_max_balance"] {
        let (a, s) = match action {
            "freeze" => (doors.block(doors.aio.freeze(missing)), doors.sync.freeze(missing)),
            "unfreeze" => (doors.block(doors.aio.unfreeze(missing)), doors.sync.unfreeze(missing)),
            "close" => (doors.block(doors.aio.close(missing)), doors.sync.close(missing)),
            "set_min_balance" => {
                (doors.block(doors.aio.set_min_balance(missing, None)), doors.sync.set_min_balance(missing, None))
            }
            _ => (doors.block(doors.aio.set_max_balance(missing, None)), doors.sync.set_max_balance(missing, None)),
        };
        let e = same_refusal(a, s);
        assert!(matches!(e, LedgerError::AccountNotFound { account } if account == missing), "{action}: {e:?}");
    }

    doors.sync.transfer(&Transfer::new(w[2], issuer, dec!(100.00)))?;
    let closed = doors.block(doors.aio.close(w[2]))?;
    assert_eq!(closed.status, AccountStatus::Closed);
    assert_eq!(closed, doors.sync.account(w[2])?);
    assert_eq!(doors.block(doors.aio.close(w[2]))?.status, AccountStatus::Closed);
    let e = same_refusal(doors.block(doors.aio.freeze(w[2])), doors.sync.freeze(w[2]));
    assert!(matches!(e, LedgerError::AccountClosed { account } if account == w[2]), "{e:?}");
    let e = same_refusal(
        doors.block(doors.aio.set_min_balance(w[2], Some(dec!(-5.00)))),
        doors.sync.set_min_balance(w[2], Some(dec!(-5.00))),
    );
    assert!(matches!(e, LedgerError::AccountClosed { .. }), "{e:?}");

    // The async door counts its operations as the sync door does: a limit of the wrong sign is
    // refused before the operation starts and is not counted; one with more decimal places than
    // the currency is the server's refusal, and is.
    let after = doors.aio.stats();
    assert_eq!(after.succeeded - before.succeeded, 9);
    assert_eq!(after.refused - before.refused, 10);
    Ok(())
}

#[test]
fn state_changes_refuse_a_locked_row_when_told_not_to_wait() -> Result<()> {
    let doors = Doors::new("aio_reads_nowait")?;
    let (_, w) = funded(&doors, 1)?;
    let nowait = doors.aio_nowait()?;
    let sync_nowait = Ledger::builder(&doors.url).lock_wait(LockWait::NoWait).build()?;

    let mut holder = Client::connect(&doors.url, NoTls)?;
    let mut held = holder.transaction()?;
    held.query("SELECT 1 FROM wallet_ledger.accounts WHERE id = $1 FOR UPDATE", &[&w[0].0])?;
    let started = std::time::Instant::now();
    for action in ["freeze", "unfreeze", "close", "set_min_balance", "set_max_balance"] {
        let (a, s) = match action {
            "freeze" => (doors.block(nowait.freeze(w[0])), sync_nowait.freeze(w[0])),
            "unfreeze" => (doors.block(nowait.unfreeze(w[0])), sync_nowait.unfreeze(w[0])),
            "close" => (doors.block(nowait.close(w[0])), sync_nowait.close(w[0])),
            "set_min_balance" => {
                (doors.block(nowait.set_min_balance(w[0], None)), sync_nowait.set_min_balance(w[0], None))
            }
            _ => (
                doors.block(nowait.set_max_balance(w[0], Some(dec!(500)))),
                sync_nowait.set_max_balance(w[0], Some(dec!(500))),
            ),
        };
        let e = same_refusal(a, s);
        match &e {
            LedgerError::LockUnavailable { policy, .. } => assert_eq!(policy, "nowait", "{action}"),
            other => panic!("{action}: {other:?}"),
        }
        assert!(e.is_retryable());
        assert_eq!(e.sql_state(), Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE));
    }
    // refused at once, not retried
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let stats = nowait.stats();
    assert_eq!((stats.lock_unavailable, stats.retries, stats.succeeded), (5, 0, 0));
    assert_eq!(doors.sync.account(w[0])?.status, AccountStatus::Open);
    held.rollback()?;

    assert_eq!(doors.block(nowait.freeze(w[0]))?.status, AccountStatus::Frozen);
    assert_eq!(doors.sync.account(w[0])?.status, AccountStatus::Frozen);
    Ok(())
}

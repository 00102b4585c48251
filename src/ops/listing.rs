//! Listings: accounts and transfers by filter, page by page (keyset pagination).

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::account::Account;
use crate::model::filter::{AccountFilter, CursorKind, Page, TransferFilter};
use crate::model::record::TransferRecord;
use crate::plan::{params, try_plan, Ctx, Plan, Sql};
use crate::protocol;
use crate::protocol::reads::{self, fetch_size, lower_bound};

impl Ledger {
    /// One page of the accounts `filter` selects, oldest first (by opening time, then id).
    /// Pages follow each other by key, never by offset: pass [`Page::next`] to
    /// [`AccountFilter::after`] for the next one; an account opened meanwhile appears on a
    /// later page or not at all, never twice. Every filter is served by an index
    /// (`docs/design.md`, "Reads"). A read: takes no lock.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use wallet_ledger::{AccountFilter, Ledger, NewAccount};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("list_accounts_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// for i in 0..5 {
    ///     let tier = if i % 2 == 0 { "gold" } else { "basic" };
    ///     ledger.open_account(&NewAccount::new("USD").metadata(json!({"tier": tier})))?;
    /// }
    /// let mut filter = AccountFilter::new().metadata(json!({"tier": "gold"})).limit(2);
    /// let mut gold = Vec::new();
    /// loop {
    ///     let page = ledger.list_accounts(&filter)?;
    ///     gold.extend(page.items);
    ///     match page.next {
    ///         Some(cursor) => filter = filter.after(cursor),
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(gold.len(), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::InvalidInput`] for a limit of 0 or above
    /// [`LIST_PAGE_MAX`](crate::limits::LIST_PAGE_MAX), a cursor of another listing, a
    /// malformed currency code, name prefix or metadata filter.
    ///
    /// Filter by state with [`AccountFilter::status`]:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use wallet_ledger::{AccountFilter, AccountStatus, Ledger, NewAccount};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("list_accounts_status_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// ledger.open_account(&NewAccount::new("USD"))?;
    /// ledger.freeze(alice)?;
    /// let frozen = ledger.list_accounts(&AccountFilter::new().status(AccountStatus::Frozen))?;
    /// assert_eq!(frozen.items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![alice]);
    /// # Ok(()) }
    /// ```
    pub fn list_accounts(&self, filter: &AccountFilter) -> Result<Page<Account>, LedgerError> {
        self.run(list_accounts_plan(filter))
    }

    /// One page of the committed transfers (and postings, and captures) `filter` selects,
    /// oldest first, each with its legs. With [`TransferFilter::account`], the account's
    /// transfers in the order of its entries; otherwise all transfers by time and id. Pages
    /// follow each other by key: pass [`Page::next`] to [`TransferFilter::after`]. A read:
    /// takes no lock, and never scans the whole entries table.
    ///
    /// A transfer commits some time after its time was taken, so a listing of the most recent
    /// moments can still gain a transfer earlier than its last item; a listing of a period
    /// that ended before the slowest transaction's start is final.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{Ledger, NewAccount, Transfer, TransferFilter};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("list_transfers_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    /// let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// let bob = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// ledger.transfer(&Transfer::new(issuer, alice, dec!(10.00)))?;
    /// ledger.transfer(&Transfer::new(issuer, bob, dec!(20.00)))?;
    /// ledger.transfer(&Transfer::new(alice, bob, dec!(3.00)))?;
    ///
    /// let page = ledger.list_transfers(&TransferFilter::new().account(alice))?;
    /// let alice_legs: Vec<_> = page.items.iter().map(|t| t.legs.iter().find(|l| l.0 == alice).unwrap().1).collect();
    /// assert_eq!(alice_legs, vec![dec!(10.00), dec!(-3.00)]);
    /// assert!(page.next.is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// Transfers can be filtered by their metadata ([`TransferFilter::metadata`]) and by being
    /// reversals or not ([`TransferFilter::reversals`]):
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use serde_json::json;
    /// use wallet_ledger::{Ledger, NewAccount, Reversal, Transfer, TransferFilter};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("list_transfers_meta_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    /// let shop = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// let paid = ledger.transfer(&Transfer::new(issuer, shop, dec!(30.00)).metadata(json!({"order": 7})))?;
    /// ledger.transfer(&Transfer::new(issuer, shop, dec!(5.00)).metadata(json!({"order": 8})))?;
    /// ledger.reverse(&Reversal::of(paid.transfer_id).amount(dec!(10.00)).metadata(json!({"order": 7, "refund": 1})))?;
    ///
    /// let order_7 = ledger.list_transfers(&TransferFilter::new().metadata(json!({"order": 7})))?;
    /// assert_eq!(order_7.items.len(), 2); // the payment and its refund
    /// let refunds = ledger.list_transfers(&TransferFilter::new().account(shop).reversals(true))?;
    /// assert_eq!(refunds.items.len(), 1);
    /// assert_eq!(refunds.items[0].reverses, Some(paid.transfer_id));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::InvalidInput`] for a limit of 0 or above
    /// [`LIST_PAGE_MAX`](crate::limits::LIST_PAGE_MAX), a cursor of another listing or a
    /// metadata filter that is not a bounded JSON object. [`LedgerError::Unsupported`] in Citus
    /// mode for a metadata or reversals filter together with an account (transfers and entries
    /// are distributed on different columns there).
    pub fn list_transfers(&self, filter: &TransferFilter) -> Result<Page<TransferRecord>, LedgerError> {
        self.run(list_transfers_plan(&self.ctx(), filter))
    }
}

/// A page of accounts: one read through the statement whose index `filter` drives.
pub(crate) fn list_accounts_plan(filter: &AccountFilter) -> Plan<Page<Account>> {
    try_plan!(filter.check());
    let (lower_time, lower_id) = lower_bound(filter.after, filter.opened_after);
    let params = params![
        lower_time,
        lower_id,
        filter.opened_before,
        filter.currency.clone(),
        filter.name_prefix.clone(),
        filter.metadata.clone(),
        fetch_size(filter.limit),
        filter.status.map(|s| s.as_str()),
    ];
    let limit = filter.limit;
    Plan::read(Sql::new(reads::account_listing(filter), params), move |rows| {
        let items = try_plan!(rows
            .iter()
            .map(|row| {
                let account = protocol::rows::account(row)?;
                let (time, id) = (account.created_at, account.id.0);
                Ok((account, time, id))
            })
            .collect::<Result<Vec<_>, LedgerError>>());
        let (items, next) = reads::page(items, limit, CursorKind::Accounts);
        Plan::done(Ok(Page { items, next }))
    })
}

/// A page of transfers: one read, by the account's entries when `filter` names an account,
/// otherwise through the statement whose index the filter drives.
pub(crate) fn list_transfers_plan(ctx: &Ctx, filter: &TransferFilter) -> Plan<Page<TransferRecord>> {
    try_plan!(filter.check());
    if filter.account.is_some() && filter.filters_transfers() && ctx.citus {
        return Plan::fail(LedgerError::Unsupported {
            operation: "list_transfers with an account and a metadata or reversals filter",
            reason: "on Citus an account's entries and their transfers live on different shards (docs/citus.md)",
        });
    }
    let (lower_time, lower_id) = lower_bound(filter.after, filter.created_after);
    let size = fetch_size(filter.limit);
    let metadata = filter.metadata_filter().cloned();
    let sql = match filter.account {
        Some(account) if filter.filters_transfers() => Sql::new(
            reads::LIST_ACCOUNT_TRANSFERS_FILTERED,
            params![account.0, lower_time, lower_id, filter.created_before, size, filter.reversals, metadata],
        ),
        Some(account) => Sql::new(
            reads::LIST_ACCOUNT_TRANSFERS,
            params![account.0, lower_time, lower_id, filter.created_before, size],
        ),
        None => Sql::new(
            reads::transfer_listing(filter),
            params![lower_time, lower_id, filter.created_before, size, filter.reversals, metadata],
        ),
    };
    let (limit, kind) = (filter.limit, filter.cursor_kind());
    Plan::read(sql, move |rows| {
        let items = try_plan!(rows.iter().map(reads::transfer_record).collect::<Result<Vec<_>, LedgerError>>());
        let (items, next) = reads::page(items, limit, kind);
        Plan::done(Ok(Page { items, next }))
    })
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::list_accounts`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::list_accounts`].
    pub async fn list_accounts(&self, filter: &AccountFilter) -> Result<Page<Account>, LedgerError> {
        self.run(list_accounts_plan(filter)).await
    }

    /// [`Ledger::list_transfers`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::list_transfers`].
    pub async fn list_transfers(&self, filter: &TransferFilter) -> Result<Page<TransferRecord>, LedgerError> {
        self.run(list_transfers_plan(&self.ctx(), filter)).await
    }
}

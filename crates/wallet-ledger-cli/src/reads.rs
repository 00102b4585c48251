//! The read commands: finding an account by external id, listing accounts and transfers page by
//! page, a transfer by id or key, an account's statement for a period and its balance at an
//! instant. Times are RFC 3339 (`2026-12-01T00:00:00Z`) on input and output.

use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use wallet_ledger::{
    AccountFilter, AccountId, AccountStatus, Cursor, Decimal, Ledger, TransferFilter, TransferId, TransferRecord,
};

use crate::json;

/// Parses an RFC 3339 time (`2026-12-01T00:00:00Z`, or with an offset).
pub(crate) fn parse_time(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z ({e})"))
}

fn parse_cursor(text: &str) -> Result<Cursor, String> {
    text.parse().map_err(|e| format!("{text:?} is not a cursor printed by a listing ({e})"))
}

/// Prints a time as RFC 3339, to the second.
pub(crate) fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `accounts ...`.
#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Accounts by filter, oldest first, one page at a time (the next page's cursor is printed)
    List(AccountsListArgs),
}

/// The filters of `accounts list`.
#[derive(Args)]
pub struct AccountsListArgs {
    /// Only accounts of this currency
    #[arg(long)]
    currency: Option<String>,
    /// Only accounts whose metadata contains this JSON object, e.g. '{"tier":"gold"}'
    #[arg(long, value_parser = crate::parse_metadata)]
    metadata: Option<serde_json::Value>,
    /// Only accounts whose name starts with this
    #[arg(long)]
    name_prefix: Option<String>,
    /// Only accounts in this state: open, frozen or closed
    #[arg(long)]
    status: Option<AccountStatus>,
    /// Only accounts opened after this time (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    opened_after: Option<SystemTime>,
    /// Only accounts opened before this time (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    opened_before: Option<SystemTime>,
    /// Most accounts on the page
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue after this cursor (printed by the previous page)
    #[arg(long, value_parser = parse_cursor)]
    after: Option<Cursor>,
    /// Print the page as JSON
    #[arg(long)]
    json: bool,
}

/// `transfers ...`.
#[derive(Subcommand)]
pub enum TransfersCommand {
    /// Transfers by filter, oldest first, one page at a time (the next page's cursor is printed)
    List(TransfersListArgs),
    /// One transfer, by id or by the idempotency key it was sent with
    Show {
        /// Transfer id
        #[arg(required_unless_present = "key", conflicts_with = "key")]
        id: Option<i64>,
        /// The caller's idempotency key
        #[arg(long)]
        key: Option<String>,
        /// Print the transfer as JSON
        #[arg(long)]
        json: bool,
    },
}

/// The filters of `transfers list`.
#[derive(Args)]
pub struct TransfersListArgs {
    /// Only transfers with a leg on this account
    #[arg(long)]
    account: Option<i64>,
    /// Only transfers after this time (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    created_after: Option<SystemTime>,
    /// Only transfers before this time (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    created_before: Option<SystemTime>,
    /// Only transfers whose metadata contains this JSON object, e.g. '{"order_id":1234}'
    #[arg(long, value_parser = crate::parse_metadata)]
    metadata: Option<serde_json::Value>,
    /// true: only reversals; false: only transfers that are not reversals (default: both)
    #[arg(long)]
    reversals: Option<bool>,
    /// Most transfers on the page
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue after this cursor (printed by the previous page)
    #[arg(long, value_parser = parse_cursor)]
    after: Option<Cursor>,
    /// Print the page as JSON
    #[arg(long)]
    json: bool,
}

/// The arguments of `statement`.
#[derive(Args)]
pub struct StatementArgs {
    /// Account id
    account: i64,
    /// Start of the period, exclusive (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    from: SystemTime,
    /// End of the period, inclusive (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    to: SystemTime,
    /// Print the totals and the period's entries as JSON
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print the period's entries as CSV (with a header line)
    #[arg(long)]
    csv: bool,
}

/// A transfer record for `--json`.
#[derive(Serialize)]
pub struct TransferJson {
    id: i64,
    /// `[account, signed amount]` per leg.
    legs: Vec<(i64, String)>,
    currency: String,
    memo: Option<String>,
    metadata: serde_json::Value,
    idempotency_key: Option<String>,
    created_at: String,
    reverses: Option<i64>,
    reversed: String,
}

impl From<&TransferRecord> for TransferJson {
    fn from(t: &TransferRecord) -> TransferJson {
        TransferJson {
            id: t.id.0,
            legs: t.legs.iter().map(|(a, d)| (a.0, d.to_string())).collect(),
            currency: t.currency.clone(),
            memo: t.memo.clone(),
            metadata: t.metadata.clone(),
            idempotency_key: t.idempotency_key.clone(),
            created_at: time(t.created_at),
            reverses: t.reverses.map(|r| r.0),
            reversed: t.reversed.to_string(),
        }
    }
}

#[derive(Serialize)]
struct PageJson<T> {
    items: Vec<T>,
    /// Pass it to `--after` for the next page; `null` at the end.
    next: Option<String>,
}

/// `account find --external-id`: the account, or exit 1 when none has that id.
pub fn find_account(ledger: &Ledger, external_id: &str, json_out: bool) -> Result<()> {
    let account = ledger
        .find_account_by_external_id(external_id)?
        .with_context(|| format!("no account has the external id {external_id:?}"))?;
    crate::show_account(&account, json_out)
}

/// `accounts list`.
pub fn list_accounts(ledger: &Ledger, args: AccountsListArgs) -> Result<()> {
    let mut filter = AccountFilter::new().limit(args.limit);
    if let Some(currency) = args.currency {
        filter = filter.currency(currency);
    }
    if let Some(metadata) = args.metadata {
        filter = filter.metadata(metadata);
    }
    if let Some(prefix) = args.name_prefix {
        filter = filter.name_prefix(prefix);
    }
    if let Some(status) = args.status {
        filter = filter.status(status);
    }
    if let Some(t) = args.opened_after {
        filter = filter.opened_after(t);
    }
    if let Some(t) = args.opened_before {
        filter = filter.opened_before(t);
    }
    if let Some(cursor) = args.after {
        filter = filter.after(cursor);
    }
    let page = ledger.list_accounts(&filter)?;
    if args.json {
        let items = page.items.iter().map(json::AccountJson::from).collect();
        return json::print(&PageJson { items, next: page.next.map(|c| c.to_string()) });
    }
    println!("{:>10} {:>8} {:>16} {:>8}  {:<20} name", "account", "currency", "balance", "status", "opened");
    for a in &page.items {
        let name = a.name.as_deref().unwrap_or("");
        println!("{:>10} {:>8} {:>16} {:>8}  {:<20} {name}", a.id, a.currency, a.balance, a.status, time(a.created_at));
    }
    print_next(page.next);
    Ok(())
}

/// `transfers list`.
pub fn list_transfers(ledger: &Ledger, args: TransfersListArgs) -> Result<()> {
    let mut filter = TransferFilter::new().limit(args.limit);
    if let Some(account) = args.account {
        filter = filter.account(AccountId(account));
    }
    if let Some(t) = args.created_after {
        filter = filter.created_after(t);
    }
    if let Some(t) = args.created_before {
        filter = filter.created_before(t);
    }
    if let Some(metadata) = args.metadata {
        filter = filter.metadata(metadata);
    }
    if let Some(reversals) = args.reversals {
        filter = filter.reversals(reversals);
    }
    if let Some(cursor) = args.after {
        filter = filter.after(cursor);
    }
    let page = ledger.list_transfers(&filter)?;
    if args.json {
        let items = page.items.iter().map(TransferJson::from).collect();
        return json::print(&PageJson { items, next: page.next.map(|c| c.to_string()) });
    }
    println!("{:>10} {:<20} {:>8}  legs", "transfer", "created", "currency");
    for t in &page.items {
        print_transfer_line(t);
    }
    print_next(page.next);
    Ok(())
}

/// `transfers show`.
pub fn show_transfer(ledger: &Ledger, id: Option<i64>, key: Option<&str>, json_out: bool) -> Result<()> {
    let (found, what) = match (id, key) {
        (Some(id), _) => (ledger.find_transfer(TransferId(id))?, format!("transfer {id}")),
        (None, Some(key)) => (ledger.find_transfer_by_key(key)?, format!("a transfer with the key {key:?}")),
        (None, None) => anyhow::bail!("give a transfer id or --key"),
    };
    let t = found.with_context(|| format!("no {what}"))?;
    if json_out {
        return json::print(&TransferJson::from(&t));
    }
    print_transfer_line(&t);
    if let Some(memo) = &t.memo {
        println!("  memo {memo}");
    }
    if let Some(key) = &t.idempotency_key {
        println!("  key {key}");
    }
    if t.metadata.as_object().is_some_and(|m| !m.is_empty()) {
        println!("  metadata {}", t.metadata);
    }
    if let Some(original) = t.reverses {
        println!("  reverses transfer {original}");
    }
    if t.reversed > Decimal::ZERO {
        println!("  reversed so far {}", t.reversed);
    }
    Ok(())
}

fn print_transfer_line(t: &TransferRecord) {
    let legs: Vec<String> = t.legs.iter().map(|(a, d)| format!("{a}:{d}")).collect();
    println!("{:>10} {:<20} {:>8}  {}", t.id, time(t.created_at), t.currency, legs.join(" "));
}

fn print_next(next: Option<Cursor>) {
    match next {
        Some(cursor) => println!("next page: --after {cursor}"),
        None => println!("(end)"),
    }
}

#[derive(Serialize)]
struct StatementJson {
    account: i64,
    from: String,
    to: String,
    opening_balance: String,
    closing_balance: String,
    total_debits: String,
    total_credits: String,
    entry_count: u64,
    entries: Vec<json::EntryJson>,
}

/// `statement`: the period's totals and its entries (paged through `history_between`).
pub fn statement(ledger: &Ledger, args: StatementArgs) -> Result<()> {
    let account = AccountId(args.account);
    let s = ledger.statement(account, args.from, args.to)?;
    let mut entries = Vec::new();
    loop {
        let after = entries.last().map(|e: &wallet_ledger::Entry| e.id);
        let page =
            ledger.history_between(account, args.from, args.to, after, wallet_ledger::limits::HISTORY_PAGE_MAX)?;
        let full = page.len() == wallet_ledger::limits::HISTORY_PAGE_MAX as usize;
        entries.extend(page);
        if !full {
            break;
        }
    }
    if args.csv {
        println!("entry,transfer,counterparty,amount,balance_after,created_at,memo");
        for e in &entries {
            let counterparty = e.counterparty.map_or(String::new(), |c| c.to_string());
            let memo = e.memo.as_deref().unwrap_or("").replace('"', "\"\"");
            println!(
                "{},{},{counterparty},{},{},{},\"{memo}\"",
                e.id,
                e.transfer_id,
                e.amount,
                e.balance_after,
                time(e.created_at)
            );
        }
        return Ok(());
    }
    if args.json {
        return json::print(&StatementJson {
            account: account.0,
            from: time(s.from),
            to: time(s.to),
            opening_balance: s.opening_balance.to_string(),
            closing_balance: s.closing_balance.to_string(),
            total_debits: s.total_debits.to_string(),
            total_credits: s.total_credits.to_string(),
            entry_count: s.entry_count,
            entries: entries.iter().map(json::EntryJson::from).collect(),
        });
    }
    println!("account {account}, {} to {}", time(s.from), time(s.to));
    println!("  opening balance {}", s.opening_balance);
    println!("  credits         {}", s.total_credits);
    println!("  debits          {}", s.total_debits);
    println!("  closing balance {}", s.closing_balance);
    println!("  {} entries", s.entry_count);
    Ok(())
}

/// `balance --at`: the balance at an instant (or now).
pub fn balance(ledger: &Ledger, account: i64, at: Option<SystemTime>, json_out: bool) -> Result<()> {
    let account = AccountId(account);
    let (balance, at) = match at {
        Some(at) => (ledger.balance_at(account, at)?, Some(at)),
        None => (ledger.balance(account)?, None),
    };
    if json_out {
        #[derive(Serialize)]
        struct BalanceJson {
            account: i64,
            balance: String,
            at: Option<String>,
        }
        return json::print(&BalanceJson { account: account.0, balance: balance.to_string(), at: at.map(time) });
    }
    println!("{balance}");
    Ok(())
}

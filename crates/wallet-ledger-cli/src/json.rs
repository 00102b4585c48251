//! `--json` output: one JSON document on stdout per command, with stable field names. Amounts
//! and balances are strings, so that no decimal place is lost to a floating-point reader; times
//! are Unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::Serialize;
use wallet_ledger::{Account, Audit, Decimal, Entry, PendingHold, Receipt};

/// Prints `value` as one line of JSON.
pub fn print(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn amount(d: Decimal) -> String {
    d.to_string()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `account show`.
#[derive(Serialize)]
pub struct AccountJson {
    pub id: i64,
    pub name: Option<String>,
    pub currency: String,
    pub balance: String,
    /// The sum of the pending holds.
    pub held: String,
    /// `null` for an unbounded account.
    pub min_balance: Option<String>,
    /// `null` for an account without a ceiling.
    pub max_balance: Option<String>,
    /// `open`, `frozen` or `closed`.
    pub status: String,
    /// The caller's id given at opening, if any.
    pub external_id: Option<String>,
    /// The caller's data given at opening: a JSON object (`{}` when none).
    pub metadata: serde_json::Value,
    pub version: i64,
    pub created_at_unix_ms: u64,
}

impl From<&Account> for AccountJson {
    fn from(a: &Account) -> AccountJson {
        AccountJson {
            id: a.id.0,
            name: a.name.clone(),
            currency: a.currency.clone(),
            balance: amount(a.balance),
            held: amount(a.held),
            min_balance: a.min_balance.map(amount),
            max_balance: a.max_balance.map(amount),
            status: a.status.to_string(),
            external_id: a.external_id.clone(),
            metadata: a.metadata.clone(),
            version: a.version,
            created_at_unix_ms: unix_ms(a.created_at),
        }
    }
}

/// `transfer`.
#[derive(Serialize)]
pub struct ReceiptJson {
    pub transfer_id: i64,
    pub from: i64,
    pub to: i64,
    pub amount: String,
    pub from_balance: String,
    pub to_balance: String,
    /// Whether an earlier transfer with the same key was returned instead of a new one.
    pub replayed: bool,
}

impl From<&Receipt> for ReceiptJson {
    fn from(r: &Receipt) -> ReceiptJson {
        ReceiptJson {
            transfer_id: r.transfer_id.0,
            from: r.from.0,
            to: r.to.0,
            amount: amount(r.amount),
            from_balance: amount(r.from_balance),
            to_balance: amount(r.to_balance),
            replayed: r.replayed,
        }
    }
}

/// `history`: the page of entries, oldest first.
#[derive(Serialize)]
pub struct HistoryJson {
    pub account: i64,
    pub entries: Vec<EntryJson>,
}

/// One entry of `history`.
#[derive(Serialize)]
pub struct EntryJson {
    pub id: i64,
    pub transfer_id: i64,
    pub counterparty: Option<i64>,
    /// Signed: negative for a debit.
    pub amount: String,
    pub balance_after: String,
    pub account_version: i64,
    pub memo: Option<String>,
    pub created_at_unix_ms: u64,
}

impl From<&Entry> for EntryJson {
    fn from(e: &Entry) -> EntryJson {
        EntryJson {
            id: e.id.0,
            transfer_id: e.transfer_id.0,
            counterparty: e.counterparty.map(|c| c.0),
            amount: amount(e.amount),
            balance_after: amount(e.balance_after),
            account_version: e.account_version,
            memo: e.memo.clone(),
            created_at_unix_ms: unix_ms(e.created_at),
        }
    }
}

/// `holds list`.
#[derive(Serialize)]
pub struct HoldsJson {
    pub account: i64,
    pub available: String,
    pub holds: Vec<HoldJson>,
}

/// One pending hold of `holds list`.
#[derive(Serialize)]
pub struct HoldJson {
    pub id: i64,
    pub from: i64,
    pub to: i64,
    pub amount: String,
    pub expires_at_unix_ms: u64,
    pub memo: Option<String>,
    pub created_at_unix_ms: u64,
}

impl From<&PendingHold> for HoldJson {
    fn from(h: &PendingHold) -> HoldJson {
        HoldJson {
            id: h.id.0,
            from: h.from.0,
            to: h.to.0,
            amount: amount(h.amount),
            expires_at_unix_ms: unix_ms(h.expires_at),
            memo: h.memo.clone(),
            created_at_unix_ms: unix_ms(h.created_at),
        }
    }
}

/// `verify`.
#[derive(Serialize)]
pub struct AuditJson {
    pub clean: bool,
    pub accounts: i64,
    pub transfers: i64,
    pub entries: i64,
    /// One line per violation, as the text output prints them.
    pub violations: Vec<String>,
    /// Whether more violations were found than listed.
    pub truncated: bool,
}

impl From<&Audit> for AuditJson {
    fn from(a: &Audit) -> AuditJson {
        AuditJson {
            clean: a.is_clean(),
            accounts: a.accounts,
            transfers: a.transfers,
            entries: a.entries,
            violations: a.violations.iter().map(ToString::to_string).collect(),
            truncated: a.truncated,
        }
    }
}

//! Listings: filters, pages and the cursors that continue them.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::LedgerError;
use crate::limits::{ACCOUNT_NAME_BYTES_MAX, LIST_PAGE_DEFAULT, LIST_PAGE_MAX};
use crate::model::metadata::{check_metadata, stored_metadata};
use crate::model::money::{check_text, is_currency_code};
use crate::values::{AccountId, AccountStatus};

/// One page of a listing, and where the next one starts.
///
/// ```
/// use wallet_ledger::Page;
///
/// let last: Page<u32> = Page { items: vec![7], next: None };
/// assert!(last.next.is_none()); // the end
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in the listing's order (oldest first).
    pub items: Vec<T>,
    /// Pass it to the filter's `after` for the next page; `None` when this page is the last.
    pub next: Option<Cursor>,
}

/// Which listing a cursor continues, and by which key it orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CursorKind {
    /// Accounts by `(created_at, id)`.
    Accounts,
    /// All transfers by `(created_at, id)`.
    Transfers,
    /// One account's transfers, by its entries' `(created_at, id)`.
    AccountTransfers,
}

impl CursorKind {
    fn tag(self) -> char {
        match self {
            CursorKind::Accounts => 'a',
            CursorKind::Transfers => 't',
            CursorKind::AccountTransfers => 'e',
        }
    }
}

/// Where a listing continues: the position after the last item of a page. Opaque: get one
/// from [`Page::next`], pass it to a filter's `after`. It prints as a short URL-safe string and
/// parses back from it, so it can travel in an HTTP query string (`?after=t.1733100000000000.42`).
///
/// ```
/// use wallet_ledger::Cursor;
///
/// let text = "t.1733100000000000.42";
/// let cursor: Cursor = text.parse()?;
/// assert_eq!(cursor.to_string(), text);
/// assert!("not a cursor".parse::<Cursor>().is_err());
/// # Ok::<(), wallet_ledger::LedgerError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub(crate) kind: CursorKind,
    /// The last item's time, in microseconds since the Unix epoch (PostgreSQL's precision).
    pub(crate) micros: i64,
    /// The last item's id (account, transfer or entry id, by kind).
    pub(crate) id: i64,
}

impl Cursor {
    pub(crate) fn new(kind: CursorKind, time: SystemTime, id: i64) -> Cursor {
        Cursor { kind, micros: micros(time), id }
    }

    /// The last item's time.
    pub(crate) fn time(&self) -> SystemTime {
        let magnitude = Duration::from_micros(self.micros.unsigned_abs());
        if self.micros >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH - magnitude
        }
    }

    /// This cursor, if it continues a listing of `kind`.
    pub(crate) fn of(cursor: Option<Cursor>, kind: CursorKind) -> Result<Option<Cursor>, LedgerError> {
        match cursor {
            Some(c) if c.kind != kind => Err(LedgerError::InvalidInput {
                field: "after",
                reason: format!("cursor {c} continues another listing"),
            }),
            other => Ok(other),
        }
    }
}

/// Microseconds since the Unix epoch (negative before it), saturating far outside
/// PostgreSQL's range.
fn micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.kind.tag(), self.micros, self.id)
    }
}

impl FromStr for Cursor {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<Cursor, LedgerError> {
        let invalid = || LedgerError::InvalidInput { field: "cursor", reason: format!("{s:?} is not a cursor") };
        let mut parts = s.splitn(3, '.');
        let kind = match parts.next() {
            Some("a") => CursorKind::Accounts,
            Some("t") => CursorKind::Transfers,
            Some("e") => CursorKind::AccountTransfers,
            _ => return Err(invalid()),
        };
        let micros = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        let id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        Ok(Cursor { kind, micros, id })
    }
}

/// A cursor travels as its text form (`"t.1733100000000000.42"`), as in a query string.
#[cfg(feature = "serde")]
impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cursor, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Page sizes of listings: 1 to [`LIST_PAGE_MAX`].
fn check_limit(limit: u32) -> Result<(), LedgerError> {
    if limit == 0 || limit > LIST_PAGE_MAX {
        return Err(LedgerError::InvalidInput {
            field: "limit",
            reason: format!("{limit} is not between 1 and {LIST_PAGE_MAX}"),
        });
    }
    Ok(())
}

/// Which accounts [`Ledger::list_accounts`](crate::Ledger::list_accounts) lists: every filter
/// set must hold. Accounts come oldest first (by opening time, then id), `limit` per page
/// (default [`LIST_PAGE_DEFAULT`]).
///
/// ```
/// use serde_json::json;
/// use std::time::{Duration, SystemTime};
/// use wallet_ledger::AccountFilter;
///
/// let gold_usd_wallets = AccountFilter::new()
///     .currency("USD")
///     .metadata(json!({"tier": "gold"}))
///     .opened_after(SystemTime::now() - Duration::from_secs(7 * 24 * 3600))
///     .limit(50);
/// # let _ = gold_usd_wallets;
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFilter {
    pub(crate) currency: Option<String>,
    pub(crate) metadata: Option<Value>,
    pub(crate) name_prefix: Option<String>,
    pub(crate) opened_after: Option<SystemTime>,
    pub(crate) opened_before: Option<SystemTime>,
    pub(crate) status: Option<AccountStatus>,
    pub(crate) limit: u32,
    pub(crate) after: Option<Cursor>,
}

impl Default for AccountFilter {
    fn default() -> Self {
        AccountFilter {
            currency: None,
            metadata: None,
            name_prefix: None,
            opened_after: None,
            opened_before: None,
            status: None,
            limit: LIST_PAGE_DEFAULT,
            after: None,
        }
    }
}

impl AccountFilter {
    /// Every account, [`LIST_PAGE_DEFAULT`] per page.
    pub fn new() -> Self {
        AccountFilter::default()
    }

    /// Only accounts in this currency.
    pub fn currency(mut self, code: impl Into<String>) -> Self {
        self.currency = Some(code.into());
        self
    }

    /// Only accounts whose metadata contains this JSON object (`metadata @> filter`:
    /// `{"tier": "gold"}` matches `{"tier": "gold", "user_id": 42}`).
    pub fn metadata(mut self, contains: Value) -> Self {
        self.metadata = Some(contains);
        self
    }

    /// Only accounts whose name starts with `prefix` (byte-wise, case-sensitive).
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// Only accounts opened strictly after `time`.
    pub fn opened_after(mut self, time: SystemTime) -> Self {
        self.opened_after = Some(time);
        self
    }

    /// Only accounts opened strictly before `time`.
    pub fn opened_before(mut self, time: SystemTime) -> Self {
        self.opened_before = Some(time);
        self
    }

    /// Only accounts in this state ([`AccountStatus`]: open, frozen or closed).
    ///
    /// ```
    /// use wallet_ledger::{AccountFilter, AccountStatus};
    ///
    /// let frozen = AccountFilter::new().status(AccountStatus::Frozen);
    /// # let _ = frozen;
    /// ```
    pub fn status(mut self, status: AccountStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// At most `limit` accounts per page: 1 to [`LIST_PAGE_MAX`] (default [`LIST_PAGE_DEFAULT`]).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Continue after this cursor (a previous page's [`Page::next`] of an account listing).
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// The checks that need no database.
    pub(crate) fn check(&self) -> Result<(), LedgerError> {
        check_limit(self.limit)?;
        Cursor::of(self.after, CursorKind::Accounts)?;
        if let Some(code) = &self.currency {
            if !is_currency_code(code) {
                return Err(LedgerError::InvalidInput {
                    field: "currency",
                    reason: format!("{code:?} is not a currency code"),
                });
            }
        }
        if let Some(prefix) = &self.name_prefix {
            check_text("name prefix", prefix, ACCOUNT_NAME_BYTES_MAX)?;
        }
        if let Some(metadata) = &self.metadata {
            check_metadata("metadata filter", metadata)?;
        }
        Ok(())
    }
}

/// Which transfers [`Ledger::list_transfers`](crate::Ledger::list_transfers) lists: every
/// filter set must hold, `limit` per page (default [`LIST_PAGE_DEFAULT`]), oldest first.
///
/// Without an account, transfers come by their own time ([`TransferRecord::created_at`](crate::TransferRecord::created_at))
/// and id, and the time filters apply to it. With an account, they come in the order of that
/// account's entries, and the time filters apply to the entries' times (taken after the
/// account's lock, the times of [`Ledger::statement`](crate::Ledger::statement)): the page is
/// that account's chain, read through an index on it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use wallet_ledger::{AccountId, TransferFilter};
///
/// let last_week = TransferFilter::new()
///     .account(AccountId(42))
///     .created_after(SystemTime::now() - Duration::from_secs(7 * 24 * 3600))
///     .limit(100);
/// # let _ = last_week;
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferFilter {
    pub(crate) account: Option<AccountId>,
    pub(crate) created_after: Option<SystemTime>,
    pub(crate) created_before: Option<SystemTime>,
    pub(crate) metadata: Option<Value>,
    pub(crate) reversals: Option<bool>,
    pub(crate) limit: u32,
    pub(crate) after: Option<Cursor>,
}

impl Default for TransferFilter {
    fn default() -> Self {
        TransferFilter {
            account: None,
            created_after: None,
            created_before: None,
            metadata: None,
            reversals: None,
            limit: LIST_PAGE_DEFAULT,
            after: None,
        }
    }
}

impl TransferFilter {
    /// Every transfer, [`LIST_PAGE_DEFAULT`] per page.
    pub fn new() -> Self {
        TransferFilter::default()
    }

    /// Only transfers with a leg on this account.
    pub fn account(mut self, account: AccountId) -> Self {
        self.account = Some(account);
        self
    }

    /// Only transfers created strictly after `time`.
    pub fn created_after(mut self, time: SystemTime) -> Self {
        self.created_after = Some(time);
        self
    }

    /// Only transfers created strictly before `time`.
    pub fn created_before(mut self, time: SystemTime) -> Self {
        self.created_before = Some(time);
        self
    }

    /// Only transfers whose metadata contains this JSON object (`metadata @> filter`, as
    /// [`AccountFilter::metadata`]: `{"order": 7}` matches `{"order": 7, "channel": "web"}`).
    /// A transfer without metadata has `{}`, which only the empty filter `{}` contains (it
    /// matches every transfer).
    ///
    /// ```
    /// use serde_json::json;
    /// use wallet_ledger::TransferFilter;
    ///
    /// let order_7 = TransferFilter::new().metadata(json!({"order_id": 7}));
    /// # let _ = order_7;
    /// ```
    pub fn metadata(mut self, contains: Value) -> Self {
        self.metadata = Some(contains);
        self
    }

    /// With or without reversals ([`Ledger::reverse`](crate::Ledger::reverse)): `true` lists only
    /// reversals (transfers whose [`TransferRecord::reverses`](crate::TransferRecord::reverses)
    /// is set), `false` only transfers that are not reversals. Default: both.
    ///
    /// ```
    /// use wallet_ledger::TransferFilter;
    ///
    /// let refunds = TransferFilter::new().reversals(true);
    /// let payments_only = TransferFilter::new().reversals(false);
    /// # let _ = (refunds, payments_only);
    /// ```
    pub fn reversals(mut self, reversals: bool) -> Self {
        self.reversals = Some(reversals);
        self
    }

    /// At most `limit` transfers per page: 1 to [`LIST_PAGE_MAX`] (default [`LIST_PAGE_DEFAULT`]).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Continue after this cursor (a previous page's [`Page::next`] of the same listing).
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// The kind of cursor this listing gives and takes.
    pub(crate) fn cursor_kind(&self) -> CursorKind {
        if self.account.is_some() {
            CursorKind::AccountTransfers
        } else {
            CursorKind::Transfers
        }
    }

    /// The checks that need no database.
    pub(crate) fn check(&self) -> Result<(), LedgerError> {
        check_limit(self.limit)?;
        Cursor::of(self.after, self.cursor_kind())?;
        if let Some(metadata) = &self.metadata {
            check_metadata("metadata filter", metadata)?;
        }
        Ok(())
    }

    /// The metadata filter as sent: `None` for none and for `{}` (which every transfer's
    /// metadata contains, stored or not).
    pub(crate) fn metadata_filter(&self) -> Option<&Value> {
        stored_metadata(self.metadata.as_ref())
    }

    /// Whether a filter on the transfers themselves (metadata, reversals) is set.
    pub(crate) fn filters_transfers(&self) -> bool {
        self.metadata_filter().is_some() || self.reversals.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_print_and_parse_back() {
        let times = [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_micros(1_733_100_000_123_456),
            UNIX_EPOCH - Duration::from_micros(5),
        ];
        for kind in [CursorKind::Accounts, CursorKind::Transfers, CursorKind::AccountTransfers] {
            for time in times {
                let cursor = Cursor::new(kind, time, 42);
                let back: Cursor = cursor.to_string().parse().unwrap_or_else(|e| panic!("{cursor}: {e}"));
                assert_eq!(back, cursor);
                assert_eq!(back.time(), time);
            }
        }
        for bad in ["", "a", "a.1", "x.1.2", "a.1.2.3", "a.b.c", "a..1", "t.99999999999999999999.1"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cursor_continues_only_its_own_listing() {
        let accounts = Cursor::new(CursorKind::Accounts, UNIX_EPOCH, 1);
        assert!(AccountFilter::new().after(accounts).check().is_ok());
        assert!(TransferFilter::new().after(accounts).check().is_err());
        let account_transfers = Cursor::new(CursorKind::AccountTransfers, UNIX_EPOCH, 1);
        assert!(TransferFilter::new().account(AccountId(1)).after(account_transfers).check().is_ok());
        assert!(TransferFilter::new().after(account_transfers).check().is_err());
    }

    #[test]
    fn limits_and_filters_are_checked() {
        assert!(AccountFilter::new().limit(0).check().is_err());
        assert!(AccountFilter::new().limit(LIST_PAGE_MAX + 1).check().is_err());
        assert!(AccountFilter::new().limit(LIST_PAGE_MAX).check().is_ok());
        assert!(AccountFilter::new().currency("usd").check().is_err());
        assert!(AccountFilter::new().metadata(serde_json::json!([1])).check().is_err());
        assert!(AccountFilter::new().name_prefix("a\0").check().is_err());
        assert!(TransferFilter::new().limit(0).check().is_err());
        assert!(TransferFilter::new().metadata(serde_json::json!("x")).check().is_err());
        assert!(TransferFilter::new().metadata(serde_json::json!({"a": 1})).check().is_ok());
    }

    #[test]
    fn an_empty_metadata_filter_filters_nothing() {
        assert!(!TransferFilter::new().metadata(serde_json::json!({})).filters_transfers());
        assert!(TransferFilter::new().metadata(serde_json::json!({"a": 1})).filters_transfers());
        assert!(TransferFilter::new().reversals(false).filters_transfers());
        assert!(!TransferFilter::new().filters_transfers());
    }
}

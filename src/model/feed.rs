//! The change feed's values: the cursor, a change and its legs, a page, a consumer's lag and
//! the feed's own state. How they are read is `protocol::feed`; the argument that the feed
//! loses nothing is in `docs/design.md` ("The change feed").

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;
use serde_json::Value;

use crate::error::LedgerError;
use crate::values::{AccountId, AccountStatus, HoldId, TransferId};

/// A position in the change feed: the last change a reader has seen. Opaque; store it as text
/// ([`Display`](fmt::Display)) and parse it back ([`FromStr`]). `None` in
/// [`Ledger::changes`](crate::Ledger::changes) means the start of the feed.
///
/// ```
/// use wallet_ledger::FeedCursor;
///
/// let cursor: FeedCursor = "fc_42".parse()?;
/// assert_eq!(cursor.to_string(), "fc_42");
/// assert!("42".parse::<FeedCursor>().is_err());
/// # Ok::<(), wallet_ledger::LedgerError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedCursor(pub(crate) i64);

const CURSOR_PREFIX: &str = "fc_";

impl FeedCursor {
    /// The start of the feed: before every change.
    pub const START: FeedCursor = FeedCursor(0);

    /// The position as a number, for a consumer that stores it in a `bigint` column of its
    /// own. Positions grow along the feed; only values this library returned (or
    /// [`FeedCursor::START`]) are meaningful.
    pub fn position(self) -> i64 {
        self.0
    }

    /// The cursor at a stored position (see [`position`](Self::position)); negative numbers
    /// read as the start.
    pub fn from_position(position: i64) -> FeedCursor {
        FeedCursor(position.max(0))
    }
}

impl fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CURSOR_PREFIX}{}", self.0)
    }
}

impl FromStr for FeedCursor {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        let invalid = || LedgerError::InvalidInput {
            field: "feed cursor",
            reason: format!("{s:?} is not a cursor this library wrote (fc_<position>)"),
        };
        let digits = s.strip_prefix(CURSOR_PREFIX).ok_or_else(invalid)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        digits.parse::<i64>().map(FeedCursor).map_err(|_| invalid())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for FeedCursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for FeedCursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a [`Change`] records.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "snake_case"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A transfer between two accounts ([`Ledger::transfer`](crate::Ledger::transfer), batches,
    /// combined transfers, `transfer_in`).
    Transfer,
    /// A posting of several legs ([`Ledger::post`](crate::Ledger::post)).
    Posting,
    /// A reversal of a transfer or posting ([`Ledger::reverse`](crate::Ledger::reverse));
    /// [`Change::reverses`] names the original.
    Reversal,
    /// A hold placed ([`Ledger::hold`](crate::Ledger::hold)): money reserved on its source, no
    /// balance moved.
    HoldPlaced,
    /// A hold captured: the transfer it became ([`Change::transfer`]) with its legs.
    HoldCaptured,
    /// A hold voided: its reservation released.
    HoldVoided,
    /// A hold expired: its reservation released by the expiry sweep.
    HoldExpired,
    /// An account opened.
    AccountOpened,
    /// An account frozen, unfrozen or closed.
    StatusChanged,
    /// An account's floor or ceiling changed.
    LimitsChanged,
}

impl ChangeKind {
    /// Every kind, in the order of this enum.
    pub const ALL: [ChangeKind; 10] = [
        ChangeKind::Transfer,
        ChangeKind::Posting,
        ChangeKind::Reversal,
        ChangeKind::HoldPlaced,
        ChangeKind::HoldCaptured,
        ChangeKind::HoldVoided,
        ChangeKind::HoldExpired,
        ChangeKind::AccountOpened,
        ChangeKind::StatusChanged,
        ChangeKind::LimitsChanged,
    ];

    /// The snake-case name used by the database and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Transfer => "transfer",
            ChangeKind::Posting => "posting",
            ChangeKind::Reversal => "reversal",
            ChangeKind::HoldPlaced => "hold_placed",
            ChangeKind::HoldCaptured => "hold_captured",
            ChangeKind::HoldVoided => "hold_voided",
            ChangeKind::HoldExpired => "hold_expired",
            ChangeKind::AccountOpened => "account_opened",
            ChangeKind::StatusChanged => "status_changed",
            ChangeKind::LimitsChanged => "limits_changed",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether balances moved: a transfer, posting, reversal or capture.
    pub fn moves_money(self) -> bool {
        matches!(self, ChangeKind::Transfer | ChangeKind::Posting | ChangeKind::Reversal | ChangeKind::HoldCaptured)
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One account a [`Change`] touched, and its state after the change.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeLeg {
    /// The account.
    pub account: AccountId,
    /// How its balance moved (signed: negative where money left; zero for a hold or an account
    /// change).
    pub amount: Decimal,
    /// Its balance after the change.
    pub balance: Decimal,
    /// Its version after the change ([`Account::version`](crate::Account::version)): a movement
    /// raises it by one; a hold or an account change leaves it as it was.
    pub version: i64,
}

/// One committed change, as the feed delivers it ([`Ledger::changes`](crate::Ledger::changes),
/// [`Ledger::consume`](crate::Ledger::consume)).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// Its position: a cursor that resumes the feed just after it.
    pub cursor: FeedCursor,
    /// What happened.
    pub kind: ChangeKind,
    /// The transfer that moved the money (transfers, postings, reversals, captures).
    pub transfer: Option<TransferId>,
    /// The hold (hold changes and captures).
    pub hold: Option<HoldId>,
    /// The transfer a reversal reverses.
    pub reverses: Option<TransferId>,
    /// The amount moved (a transfer's amount; a posting's total credits) or held, voided,
    /// expired (a hold's); `None` for an account change.
    pub amount: Option<Decimal>,
    /// The currency of its first leg's account.
    pub currency: String,
    /// The accounts touched, ordered by account id: a movement's legs with their balances and
    /// versions after it; for a hold, its source account; for an account change, the account.
    pub legs: Vec<ChangeLeg>,
    /// The memo of the transfer or hold.
    pub memo: Option<String>,
    /// The caller's metadata: the transfer's or hold's, if any was given; for an account change,
    /// the account's ([`NewAccount::metadata`](crate::NewAccount::metadata), `{}` by default).
    pub metadata: Option<Value>,
    /// The caller's idempotency key of the transfer or hold (`None` for internal keys).
    pub idempotency_key: Option<String>,
    /// For an account change (opened, status, limits): the account's status after it; `None`
    /// for movements and holds.
    pub status: Option<AccountStatus>,
    /// For an account change: the account's floor after it (`None`: unbounded).
    pub min_balance: Option<Decimal>,
    /// For an account change: the account's ceiling after it (`None`: none).
    pub max_balance: Option<Decimal>,
    /// When it happened (server clock, taken under its locks).
    pub at: SystemTime,
}

impl Change {
    /// The accounts it touched, ascending.
    pub fn accounts(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.legs.iter().map(|leg| leg.account)
    }

    /// The leg of `account`, if the change touched it.
    pub fn leg(&self, account: AccountId) -> Option<&ChangeLeg> {
        self.legs.iter().find(|leg| leg.account == account)
    }
}

/// A page of the feed: the changes after the cursor asked for, in feed order, and the cursor to
/// ask with next (the last change's, or the one asked with when there was none).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePage {
    /// The changes, in feed order.
    pub changes: Vec<Change>,
    /// Where the next page starts.
    pub next: FeedCursor,
}

/// How far a durable consumer is behind the feed ([`Ledger::consumer_lag`](crate::Ledger::consumer_lag)).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerLag {
    /// The consumer's name.
    pub name: String,
    /// Its position: every change up to it has been processed (`None`: it has processed none).
    pub position: Option<FeedCursor>,
    /// Changes processed so far, all time.
    pub delivered: u64,
    /// Committed changes after its position, not yet processed.
    pub changes: u64,
    /// The age of the oldest of them (zero when there is none).
    pub behind: Duration,
    /// When it last advanced (`None`: never).
    pub updated_at: Option<SystemTime>,
}

/// The feed's own state ([`Ledger::feed_status`](crate::Ledger::feed_status)): how far the
/// readable feed trails what has been written, and why.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedStatus {
    /// The last position drawn by any writer (committed or not).
    pub last_drawn: FeedCursor,
    /// The horizon: every change up to it is final and readable.
    pub horizon: FeedCursor,
    /// Committed changes past the horizon: written but not yet readable.
    pub held_back: u64,
    /// The age of the oldest transaction that holds the horizon back (any transaction with an
    /// xid on this server, running since before the newest position was drawn), if one is open.
    pub oldest_open_transaction: Option<Duration>,
}

/// A feed page size: 1 ..= [`FEED_PAGE_MAX`](crate::limits::FEED_PAGE_MAX).
pub(crate) fn check_feed_limit(limit: u32) -> Result<(), LedgerError> {
    if limit == 0 || limit > crate::limits::FEED_PAGE_MAX {
        return Err(LedgerError::InvalidInput {
            field: "limit",
            reason: format!("{limit} is not between 1 and {}", crate::limits::FEED_PAGE_MAX),
        });
    }
    Ok(())
}

/// A consumer's name: 1 ..= [`CONSUMER_NAME_BYTES_MAX`](crate::limits::CONSUMER_NAME_BYTES_MAX)
/// bytes, no NUL.
pub(crate) fn check_consumer_name(name: &str) -> Result<(), LedgerError> {
    let max = crate::limits::CONSUMER_NAME_BYTES_MAX;
    if name.is_empty() || name.len() > max || name.contains('\0') {
        return Err(LedgerError::InvalidInput {
            field: "consumer name",
            reason: format!("must be 1 to {max} bytes without NUL, got {} bytes", name.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote_and_nothing_else() {
        for position in [0, 1, 42, i64::MAX] {
            let cursor = FeedCursor(position);
            assert_eq!(cursor.to_string().parse::<FeedCursor>().unwrap(), cursor);
        }
        for bad in ["", "fc_", "fc_-1", "fc_+1", "fc_1a", "42", "fc_99999999999999999999", " fc_1"] {
            assert!(bad.parse::<FeedCursor>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChangeKind::parse("refund"), None);
    }

    #[test]
    fn limits_and_names_are_checked() {
        assert!(check_feed_limit(0).is_err());
        assert!(check_feed_limit(1).is_ok());
        assert!(check_feed_limit(crate::limits::FEED_PAGE_MAX + 1).is_err());
        assert!(check_consumer_name("").is_err());
        assert!(check_consumer_name("a\0b").is_err());
        assert!(check_consumer_name(&"x".repeat(201)).is_err());
        assert!(check_consumer_name("daily-totals").is_ok());
    }
}

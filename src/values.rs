//! Plain value types: ids (newtypes over the database's `bigint` keys, so that an account id is
//! never passed where a transfer id belongs) and states. Ground floor: imports nothing of the
//! crate.

use std::fmt;
use std::str::FromStr;

/// Defines an id newtype with `Display` as the bare number.
macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id! {
    /// The id of an account, as the database assigned it.
    AccountId
}

id! {
    /// The id of a committed transfer.
    TransferId
}

id! {
    /// The id of a hold.
    HoldId
}

id! {
    /// The id of an entry; also the cursor for the next page of
    /// [`Ledger::history`](crate::Ledger::history).
    EntryId
}

/// Where a hold is in its life. Only `Pending` can change, and only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum HoldState {
    /// Reserved, not yet ended (or lapsed but not yet released by an expiry worker, which
    /// capture and void report as `Expired`).
    Pending,
    /// Ended by a capture: money moved.
    Captured,
    /// Ended by a void: released without moving money.
    Voided,
    /// Ended by its expiry time.
    Expired,
}

impl HoldState {
    /// The lowercase name used in the database and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Pending => "pending",
            HoldState::Captured => "captured",
            HoldState::Voided => "voided",
            HoldState::Expired => "expired",
        }
    }
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HoldState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(HoldState::Pending),
            "captured" => Ok(HoldState::Captured),
            "voided" => Ok(HoldState::Voided),
            "expired" => Ok(HoldState::Expired),
            other => Err(format!("unknown hold state {other:?}")),
        }
    }
}

/// Where an account is in its life: open, frozen (pays nothing, still receives) or closed
/// (neither pays nor receives, holds zero; final).
///
/// ```
/// use wallet_ledger::AccountStatus;
///
/// assert_eq!("frozen".parse::<AccountStatus>(), Ok(AccountStatus::Frozen));
/// assert_eq!(AccountStatus::Closed.to_string(), "closed");
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccountStatus {
    /// Pays and receives.
    Open,
    /// Refuses every debit (transfers, postings, new holds, captures); credits, voids and
    /// expiry still go through. [`Ledger::unfreeze`](crate::Ledger::unfreeze) opens it again.
    Frozen,
    /// Refuses every movement in or out; its balance is zero and nothing is held. Final.
    Closed,
}

impl AccountStatus {
    /// The lowercase name used in the database and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Open => "open",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccountStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(AccountStatus::Open),
            "frozen" => Ok(AccountStatus::Frozen),
            "closed" => Ok(AccountStatus::Closed),
            other => Err(format!("unknown account status {other:?}")),
        }
    }
}

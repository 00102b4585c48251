//! # wallet-ledger
//!
//! Moves money between wallet accounts stored in PostgreSQL, correctly under heavy concurrency.
//!
//! Payment code that reads a balance, decides in application code and writes the balance back
//! loses money when two requests race: both read 10.00, both spend it. wallet-ledger locks the
//! account rows inside one transaction (`SELECT ... FOR UPDATE`), always in ascending account id
//! order so that two transfers in opposite directions can never deadlock, checks the floor on
//! the locked values, and writes a double-entry record, all in one server round trip.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rust_decimal_macros::dec;
//! use wallet_ledger::{Ledger, LedgerError, NewAccount, Transfer};
//!
//! # let url = wallet_ledger_embedded::fresh_database("crate_docs")?;
//! let ledger = Ledger::connect(&url)?; // any PostgreSQL; migrations run on connect
//! ledger.define_currency("USD", 2)?;
//! let issuer = ledger.open_account(&NewAccount::new("USD").name("issuer").unbounded())?;
//! let alice = ledger.open_account(&NewAccount::new("USD").name("alice"))?;
//! let bob = ledger.open_account(&NewAccount::new("USD").name("bob"))?;
//!
//! ledger.transfer(&Transfer::new(issuer.id, alice.id, dec!(100.00)).idempotency_key("deposit-1"))?;
//! let receipt = ledger.transfer(&Transfer::new(alice.id, bob.id, dec!(30.00)))?;
//! assert_eq!(receipt.from_balance, dec!(70.00));
//!
//! // Refusals are typed and change nothing.
//! let err = ledger.transfer(&Transfer::new(alice.id, bob.id, dec!(500.00))).unwrap_err();
//! assert!(matches!(err, LedgerError::InsufficientFunds { .. }));
//! assert_eq!(ledger.balance(alice.id)?, dec!(70.00));
//!
//! // Retrying with the same key returns the first receipt instead of paying twice.
//! let again = ledger.transfer(&Transfer::new(issuer.id, alice.id, dec!(100.00)).idempotency_key("deposit-1"))?;
//! assert!(again.replayed);
//! assert!(ledger.verify()?.is_clean());
//! # Ok(()) }
//! ```
//!
//! For throughput on hot accounts, many movements can share one transaction:
//! [`Ledger::transfer_batch`] (each item its own outcome), [`Ledger::post`] (a multi-leg
//! [`Posting`], all legs or none) and the opt-in combiner ([`CombineConfig`]), which applies
//! concurrent [`Ledger::transfer`] calls together.
//!
//! Modules hold one concept each; everything a caller needs is re-exported here.
//! [`embedded`] starts a local PostgreSQL for tests and tools.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod account;
mod audit;
mod batch;
mod call;
pub mod citus;
mod combiner;
mod entry;
mod error;
mod hold;
pub mod in_transaction;
mod ledger;
pub mod limits;
mod lock_plan;
mod money;
mod observe;
mod pool;
mod posting;
mod retry;
pub mod schema;
mod stats;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "embedded")]
pub use wallet_ledger_embedded::{cluster, embedded, embedded_citus};
#[cfg(feature = "tls")]
pub mod tls;
mod transfer;

pub use account::{Account, AccountId, NewAccount};
pub use audit::{Audit, Violation};
pub use combiner::CombineConfig;
pub use entry::{Entry, EntryId};
pub use error::{KeyHolder, LedgerError};
pub use hold::{Hold, HoldId, HoldReceipt, HoldState, PendingHold};
pub use ledger::{Ledger, LedgerBuilder, LockWait};
pub use lock_plan::LockPlan;
pub use pool::LedgerConnection;
pub use posting::{Posting, PostingReceipt};
pub use stats::{Stats, LOCK_WAIT_THRESHOLD, POOL_WAIT_THRESHOLD};
pub use transfer::{Receipt, Transfer, TransferId};

/// The decimal type of every amount and balance (re-exported from `rust_decimal`).
pub use rust_decimal::Decimal;

/// The README's examples, compiled and run as doc-tests so they never drift.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

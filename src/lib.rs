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
//! [`Posting`], all legs or none) and the combiner, which applies concurrent
//! [`Ledger::transfer`] calls together: on by default and adaptive (a lone call goes straight to
//! the server; [`LedgerBuilder::combining`] turns it off, [`CombineConfig`] tunes it).
//!
//! Downstream systems follow the ledger through its change feed: [`Ledger::changes`] pages
//! through every committed change once, in order, and [`Ledger::consume`] runs a durable
//! consumer that advances in its handler's own transaction.
//!
//! What a wallet product reads: accounts carry an external id and metadata
//! ([`NewAccount::external_id`], [`NewAccount::metadata`], [`Ledger::find_account_by_external_id`]);
//! transfers are found by id or key ([`Ledger::find_transfer`], [`Ledger::find_transfer_by_key`])
//! and listed by filter, page by page ([`Ledger::list_accounts`], [`Ledger::list_transfers`]);
//! an account's past is read as of any instant ([`Ledger::balance_at`], [`Ledger::statement`],
//! [`Ledger::history_between`]). With the `serde` feature every public data type is
//! `Serialize` and `Deserialize`, so a backend can return it as JSON as it is.
//!
//! ## From async code
//!
//! Backends on tokio (axum, actix-web, tonic) use the async door, [`aio::Ledger`] (feature
//! `aio`): the same operations as [`Ledger`] as `async fn`s with the same names, arguments,
//! errors, idempotency and retries, on `tokio-postgres` with a `deadpool-postgres` pool, with
//! the `_in` forms on the caller's `tokio_postgres::Transaction` and transfers combined across
//! tasks. Both doors run one core: each operation is written once, as a plan of statements and
//! decoders, and only the sending and waiting differ (`docs/design.md`, "Two doors, one core").
//!
//! The synchronous [`Ledger`] blocks its thread until the database answers (the `postgres`
//! client runs a small tokio runtime of its own). On a thread that drives an async runtime (a
//! tokio task such as an axum handler, or the body of `#[tokio::main]` or `#[tokio::test]`)
//! that would stall the runtime, and tokio forbids it with a panic; the synchronous ledger
//! returns [`LedgerError::AsyncRuntime`] instead, before sending anything. Use [`aio::Ledger`]
//! there, or wrap the call in `tokio::task::spawn_blocking` (or `tokio::task::block_in_place`
//! on a multi-thread runtime), where it works as on any thread:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rust_decimal_macros::dec;
//! use wallet_ledger::{aio, AccountId, Ledger, LedgerError, Receipt, Transfer};
//!
//! // A request handler on the async door: awaited, nothing blocks the runtime.
//! async fn pay(ledger: &aio::Ledger, from: AccountId, to: AccountId) -> Result<Receipt, LedgerError> {
//!     ledger.transfer(&Transfer::new(from, to, dec!(5.00)).idempotency_key("order-77")).await
//! }
//!
//! let runtime = tokio::runtime::Runtime::new()?;
//! let receipt = runtime.block_on(async {
//!     let ledger = aio::Ledger::connect("postgresql://app@localhost/payments").await?;
//!     pay(&ledger, AccountId(1), AccountId(2)).await
//! })?;
//! println!("paid in transfer {}", receipt.transfer_id);
//!
//! // The synchronous ledger on tokio's blocking pool works as on any thread ...
//! let ledger = Ledger::connect("postgresql://app@localhost/payments")?;
//! let sync = ledger.clone();
//! let balance = runtime.block_on(tokio::task::spawn_blocking(move || sync.balance(AccountId(1))))??;
//! println!("balance {balance}");
//!
//! // ... and called directly on the runtime's thread it is refused, nothing sent.
//! let direct = runtime.block_on(async { ledger.balance(AccountId(1)) });
//! assert!(matches!(direct, Err(LedgerError::AsyncRuntime)));
//! # Ok(()) }
//! ```
//!
//! Modules hold one concept each; everything a caller needs is re-exported here.
//! [`embedded`] starts a local PostgreSQL for tests and tools.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Each module imports only from its own floor or below: values and limits; error; model;
// combiner, protocol, plan, observe, stats, schema and citus; driver and aio; ops
// (docs/design.md, "Module map").
#[cfg(feature = "aio")]
pub mod aio;
pub mod citus;
mod combiner;
mod driver;
mod error;
pub mod limits;
mod model;
mod observe;
mod ops;
mod plan;
mod protocol;
pub mod schema;
mod stats;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "tls")]
pub mod tls;
mod values;

#[cfg(feature = "embedded")]
pub use wallet_ledger_embedded::{cluster, embedded, embedded_citus};

pub use combiner::CombineConfig;
pub use driver::ledger::{Ledger, LedgerBuilder};
pub use driver::pool::LedgerConnection;
pub use error::{KeyHolder, LedgerError};
pub use model::account::{Account, NewAccount};
pub use model::audit::{Audit, Violation};
pub use model::entry::Entry;
pub use model::feed::{Change, ChangeKind, ChangeLeg, ChangePage, ConsumerLag, FeedCursor, FeedStatus};
pub use model::filter::{AccountFilter, Cursor, Page, TransferFilter};
pub use model::hold::{Hold, HoldReceipt, PendingHold};
pub use model::lock_plan::LockPlan;
pub use model::lock_wait::LockWait;
pub use model::posting::{Posting, PostingReceipt};
pub use model::record::TransferRecord;
pub use model::reversal::Reversal;
pub use model::statement::Statement;
pub use model::transfer::{Receipt, Transfer};
pub use ops::feed::HandlerError;
pub use ops::in_transaction;
pub use stats::{Stats, LOCK_WAIT_THRESHOLD, POOL_WAIT_THRESHOLD};
pub use values::{AccountId, AccountStatus, EntryId, HoldId, HoldState, TransferId};

/// The decimal type of every amount and balance (re-exported from `rust_decimal`).
pub use rust_decimal::Decimal;

//! Every limit of the library, named, with its reason. Inputs beyond a limit are refused with a
//! typed error before anything is sent to the database.

use std::time::Duration;

/// Most decimal places a currency may have (`numeric` holds more; 18 covers wei-style units).
pub const CURRENCY_SCALE_MAX: u32 = 18;
/// Longest currency code, in bytes (`[A-Z0-9_]`, as the `currencies` CHECK says).
pub const CURRENCY_CODE_BYTES_MAX: usize = 16;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Longest memo, in bytes.
pub const MEMO_BYTES_MAX: usize = 1024;
/// Longest account name, in bytes.
pub const ACCOUNT_NAME_BYTES_MAX: usize = 256;
/// Longest external id of an account ([`NewAccount::external_id`](crate::NewAccount::external_id)),
/// in bytes; the `accounts_external_id_length` CHECK says the same.
pub const EXTERNAL_ID_BYTES_MAX: usize = 256;
/// Largest metadata object, in bytes of JSON text. The library checks the compact JSON it
/// sends; the database (`accounts_metadata_size`) checks its own text form of the `jsonb`,
/// which adds a space after each `:` and `,`, against the same bound: a value either refuses
/// is [`LedgerError::InvalidInput`](crate::LedgerError::InvalidInput). Metadata is for the
/// caller's references and labels, not documents: 8 KiB keeps an account row small.
pub const METADATA_BYTES_MAX: usize = 8192;
/// Page size of [`AccountFilter`](crate::AccountFilter) and [`TransferFilter`](crate::TransferFilter)
/// listings unless `.limit(n)` says otherwise.
pub const LIST_PAGE_DEFAULT: u32 = 100;
/// Largest page of a listing: a page is read in one statement, and a transfer record carries
/// its legs.
pub const LIST_PAGE_MAX: u32 = 1_000;
/// Largest page of [`Ledger::history`](crate::Ledger::history).
pub const HISTORY_PAGE_MAX: u32 = 10_000;
/// Largest page of the change feed ([`Ledger::changes`](crate::Ledger::changes),
/// [`Ledger::consume`](crate::Ledger::consume)): a page is read in one statement.
pub const FEED_PAGE_MAX: u32 = 10_000;
/// Longest consumer name, in bytes ([`Ledger::consume`](crate::Ledger::consume)).
pub const CONSUMER_NAME_BYTES_MAX: usize = 200;
/// Calls of one ledger (of one lane, with
/// [`combining_lanes`](crate::LedgerBuilder::combining_lanes)) in flight (alone, or combined
/// batches) before adaptive combining
/// ([`LedgerBuilder::combining`](crate::LedgerBuilder::combining)) queues a further
/// [`Ledger::transfer`](crate::Ledger::transfer) call for the next batch. Two keep the server
/// busy on accounts that do not collide; on hot accounts, where calls would wait for each
/// other's row locks anyway, every further caller joins the next batch instead.
pub const COMBINE_IN_FLIGHT: usize = 2;
/// Most transfers in one batch of adaptive combining.
pub const COMBINE_BATCH_MAX: usize = 256;
/// Most combining lanes of one ledger
/// ([`LedgerBuilder::combining_lanes`](crate::LedgerBuilder::combining_lanes)).
pub const COMBINE_LANES_MAX: usize = 256;
/// Most violations an [`Audit`](crate::Audit) lists before it stops collecting (it still counts).
pub const AUDIT_VIOLATIONS_MAX: usize = 10_000;
/// Most items in one [`Ledger::transfer_batch`](crate::Ledger::transfer_batch): one
/// transaction holds every account of the batch locked until its commit, so a bound keeps lock
/// hold time and the statement's arrays small. Beyond it: [`LedgerError::BatchTooLarge`](crate::LedgerError::BatchTooLarge).
pub const BATCH_ITEMS_MAX: usize = 10_000;
/// Most legs in one [`Posting`](crate::Posting).
pub const POSTING_LEGS_MAX: usize = 1_000;
/// Default number of retries after the first attempt, for transient errors.
pub const RETRIES_DEFAULT: u32 = 8;
/// First backoff between retries; doubles per retry up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(1);
/// Longest backoff between two retries.
pub const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// How long a hold stays pending unless told otherwise (a card authorization's usual week).
pub const HOLD_EXPIRY_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest a hold may stay pending.
pub const HOLD_EXPIRY_MAX: Duration = Duration::from_secs(366 * 24 * 3600);
/// Default pool size (connections).
pub const POOL_SIZE_DEFAULT: u32 = 16;
/// Default wait for a pooled connection.
pub const POOL_CHECKOUT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

const _: () = assert!(BACKOFF_MIN.as_nanos() < BACKOFF_MAX.as_nanos());
const _: () = assert!(CURRENCY_SCALE_MAX <= 28);
const _: () = assert!(HOLD_EXPIRY_DEFAULT.as_secs() <= HOLD_EXPIRY_MAX.as_secs());
const _: () = assert!(LIST_PAGE_DEFAULT >= 1 && LIST_PAGE_DEFAULT <= LIST_PAGE_MAX);
const _: () = assert!(LIST_PAGE_MAX <= HISTORY_PAGE_MAX);

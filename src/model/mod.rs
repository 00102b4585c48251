//! Requests and answers as plain values, and the checks that need no database: money amounts,
//! accounts (and their metadata), transfers, holds, postings, entries, transfer records,
//! listings' filters and cursors, statements, the audit's findings, lock plans and the lock
//! wait policy. Imports only the ground floor (`values`, `limits`, `error`) and itself.

pub(crate) mod account;
pub(crate) mod audit;
pub(crate) mod entry;
pub(crate) mod feed;
pub(crate) mod filter;
pub(crate) mod hold;
pub(crate) mod lock_plan;
pub(crate) mod lock_wait;
pub(crate) mod metadata;
pub(crate) mod money;
pub(crate) mod posting;
pub(crate) mod record;
pub(crate) mod reversal;
pub(crate) mod statement;
pub(crate) mod transfer;

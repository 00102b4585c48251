//! The operations, one module each, as `impl Ledger` blocks: what each sends (from `protocol`)
//! through the driver, and how its answer reaches the caller.

pub(crate) mod access;
pub(crate) mod accounts;
pub(crate) mod audit;
pub(crate) mod batch;
pub(crate) mod feed;
pub(crate) mod history;
pub(crate) mod hold;
pub mod in_transaction;
pub(crate) mod listing;
pub(crate) mod lookup;
pub(crate) mod one_transfer;
pub(crate) mod posting;
pub(crate) mod reversal;
pub(crate) mod statement;
pub(crate) mod status;
pub(crate) mod transfer;

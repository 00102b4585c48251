//! The reads of issue 17: lookups, listings, statements and balances as of a time. Their
//! statements and the decoding of their rows.

/// The account with an external id; parameter `(external_id)`.
pub(crate) const ACCOUNT_BY_EXTERNAL_ID: &str = include_str!("../../sql/queries/account_by_external_id.sql");

//! Test kit for property-based, multi-threaded tests of a ledger (feature `testkit`).
//!
//! - [`controls`]: deliberately broken transfer implementations that a checker must catch.
//!
//! Nothing here is meant for production code paths.

pub mod controls;
pub mod expiry_controls;

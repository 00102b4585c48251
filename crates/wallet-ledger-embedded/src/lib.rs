//! # wallet-ledger-embedded
//!
//! Local PostgreSQL servers for the tests, examples, benchmarks and command-line tool of
//! [wallet-ledger](https://docs.rs/wallet-ledger), started from the machine's own PostgreSQL
//! binaries so that nothing has to be set up by hand:
//!
//! - [`embedded`]: a throwaway or persistent server, and a fresh database per test
//!   ([`TestDatabase`], dropped afterwards even on a user's own `DATABASE_URL` server).
//! - [`embedded_citus`]: a local Citus cluster (a coordinator and workers).
//! - [`cluster`]: faults on embedded servers (crash, restart, standby, promotion, signals).
//!
//! Unix only (the servers run under an unprivileged user and are watched by a process of their
//! own). The library itself does not depend on this crate; its `embedded` feature re-exports
//! these modules under their old paths (`wallet_ledger::embedded`, ...).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod embedded;
pub mod embedded_citus;
mod error;

pub use cluster::{multi_host_url, Signal};
pub use embedded::{fresh_database, shared_server, with_dbname, EmbeddedError, EmbeddedServer, TestDatabase};
pub use embedded_citus::{citus_database, citus_installed, CitusCluster, CitusError, EMBEDDED_SHARD_COUNT};

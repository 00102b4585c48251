//! The synchronous driver: the [`Ledger`](crate::Ledger) handle and its builder, the r2d2 pool
//! and its statement cache, the call-and-retry loop, counters and tracing spans, and the guard
//! that refuses calls on an async runtime's thread. Sends what `protocol` names and hands the
//! rows back to it; holds no ledger rule.

pub(crate) mod async_guard;
pub(crate) mod call;
pub(crate) mod ledger;
pub(crate) mod migrator;
pub(crate) mod pool;

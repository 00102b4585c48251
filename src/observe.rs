//! Tracing spans for ledger operations (feature `tracing`, on by default).
//!
//! Every money-moving operation runs inside an `INFO` span named after it (`wallet_ledger.transfer`,
//! `wallet_ledger.hold`, ...) with the account ids, amount and idempotency key it was asked for,
//! the lock wait policy, and, when it ends, `attempts` (1 unless transient errors were retried),
//! `lock_wait_us` (transfers: how long the server waited for the row locks), and `outcome`
//! ([`LedgerError::kind`](crate::LedgerError::kind), or `ok`). Each retry is a
//! `DEBUG` event inside the span with the error's SQLSTATE. A subscriber's span timing gives
//! each operation's latency. Spans never carry a connection string, a password or a memo.
//!
//! Without a subscriber installed, a disabled span costs a few nanoseconds; without the feature
//! it costs nothing.

use crate::error::LedgerError;

/// An entered operation span; [`finish`](OpSpan::finish) records the outcome.
pub(crate) struct OpSpan {
    #[cfg(feature = "tracing")]
    span: tracing::span::EnteredSpan,
}

impl OpSpan {
    #[cfg(feature = "tracing")]
    pub(crate) fn new(span: tracing::Span) -> OpSpan {
        OpSpan { span: span.entered() }
    }

    /// Records the outcome and passes the result on.
    pub(crate) fn finish<T>(self, result: Result<T, LedgerError>) -> Result<T, LedgerError> {
        #[cfg(feature = "tracing")]
        {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            self.span.record("outcome", outcome);
        }
        result
    }
}

/// The span of one operation of the async door: entered on every poll of the operation's
/// future (a span entered across an `.await` would be wrong), the outcome recorded at its end.
pub(crate) struct AsyncOpSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl AsyncOpSpan {
    #[cfg(feature = "tracing")]
    #[cfg_attr(not(feature = "aio"), allow(dead_code))]
    pub(crate) fn new(span: tracing::Span) -> AsyncOpSpan {
        AsyncOpSpan { span }
    }

    /// Runs `operation` inside the span and records its outcome.
    #[cfg_attr(not(feature = "aio"), allow(dead_code))]
    pub(crate) async fn run<T>(
        self,
        operation: impl std::future::Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            let result = operation.instrument(self.span.clone()).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            self.span.record("outcome", outcome);
            result
        }
        #[cfg(not(feature = "tracing"))]
        operation.await
    }
}

/// Opens an operation span: `op_span!("transfer", from = .., to = .., ...)`, or
/// `op_span!(async "transfer", ...)` for the async door. Every field must be a plain value
/// (`i64`, `&str`, `Display` through `%`).
#[cfg(feature = "tracing")]
macro_rules! op_span {
    (async $name:literal, $($fields:tt)*) => {
        $crate::observe::AsyncOpSpan::new($crate::observe::op_span!(@span $name, $($fields)*))
    };
    (@span $name:literal, $($fields:tt)*) => {
        tracing::info_span!(
            target: "wallet_ledger",
            concat!("wallet_ledger.", $name),
            $($fields)*,
            attempts = tracing::field::Empty,
            lock_wait_us = tracing::field::Empty,
            outcome = tracing::field::Empty
        )
    };
    ($name:literal, $($fields:tt)*) => {
        $crate::observe::OpSpan::new($crate::observe::op_span!(@span $name, $($fields)*))
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! op_span {
    (async $name:literal, $($fields:tt)*) => {
        $crate::observe::AsyncOpSpan {}
    };
    ($name:literal, $($fields:tt)*) => {
        $crate::observe::OpSpan {}
    };
}

pub(crate) use op_span;

/// Records the lock wait (microseconds) the server reported, in the current span.
#[allow(unused_variables)]
pub(crate) fn lock_wait(micros: i64) {
    #[cfg(feature = "tracing")]
    tracing::Span::current().record("lock_wait_us", micros);
}

/// Records attempt `n` (from 1) of the operation in the current span, and the error that made
/// the previous attempt fail.
#[allow(unused_variables)]
pub(crate) fn attempt(n: u32, previous: Option<&postgres::Error>) {
    #[cfg(feature = "tracing")]
    {
        tracing::Span::current().record("attempts", n);
        if let Some(e) = previous {
            let sqlstate = e.code().map_or("none", |c| c.code());
            tracing::debug!(target: "wallet_ledger", attempt = n, sqlstate, closed = e.is_closed(), "retrying after a transient error");
        }
    }
}

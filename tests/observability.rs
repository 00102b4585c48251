//! Tracing spans of every operation. The only test in its binary: tracing caches each
//! callsite's interest process-wide, so a test running the ledger on another thread without a
//! subscriber could leave the spans disabled for this one (seen: it failed 3 runs in 5 while
//! the stats test ran beside it; the stats test now lives in `tests/placement.rs`).
#![cfg(feature = "tracing")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use rust_decimal_macros::dec;
use tracing_subscriber::fmt::format::FmtSpan;
use wallet_ledger::{Ledger, LedgerError, NewAccount, Transfer};
use wallet_ledger_embedded::TestDatabase;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_operation_has_a_span_with_its_outcome_and_no_secrets() -> Result<()> {
    let database = TestDatabase::new("observability")?;
    // The embedded server trusts local connections, so a password here is ignored by the
    // server but present in the string the ledger was given: it must not be logged.
    let url = format!("{} password=s3cret-pw", database.url());
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let (issuer, a, b) = tracing::subscriber::with_default(subscriber, || -> Result<_> {
        let ledger = Ledger::builder(&url).pool_size(2).build()?;
        ledger.define_currency("USD", 2)?;
        let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
        let a = ledger.open_account(&NewAccount::new("USD"))?.id;
        let b = ledger.open_account(&NewAccount::new("USD"))?.id;
        ledger.transfer(&Transfer::new(issuer, a, dec!(10)).idempotency_key("fund-a"))?;
        let refused = ledger.transfer(&Transfer::new(a, b, dec!(99)));
        assert!(matches!(refused, Err(LedgerError::InsufficientFunds { .. })));
        let hold = ledger.hold(&wallet_ledger::Hold::new(a, b, dec!(3)))?.hold_id;
        ledger.void(hold)?;
        // The async door's spans: the same names and fields, entered on every poll. A
        // current-thread runtime keeps the operation on this thread, under this subscriber.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let ledger = wallet_ledger::aio::Ledger::builder(&url).pool_size(2).build().await?;
            ledger.transfer(&Transfer::new(issuer, b, dec!(7)).idempotency_key("async-fund-b")).await?;
            let refused = ledger.transfer(&Transfer::new(b, a, dec!(99)).idempotency_key("async-too-much")).await;
            assert!(matches!(refused, Err(LedgerError::InsufficientFunds { .. })));
            Ok::<_, anyhow::Error>(())
        })?;
        Ok((issuer, a, b))
    })?;
    let text = String::from_utf8(captured.0.lock().unwrap().clone())?;
    let closes: Vec<&str> = text.lines().filter(|l| l.contains("close")).collect();
    let find = |needle: &str| closes.iter().find(|l| l.contains(needle)).copied();
    let funded = find("fund-a").unwrap_or_else(|| panic!("no span for the funding transfer in:\n{text}"));
    for field in [
        "wallet_ledger.transfer".to_string(),
        format!("from={}", issuer.0),
        format!("to={}", a.0),
        "amount=10".into(),
        "lock_wait=block".into(),
        "attempts=1".into(),
        "outcome=\"ok\"".into(),
        "lock_wait_us=".into(),
    ] {
        assert!(funded.contains(&field), "{field} missing in {funded}");
    }
    let refused = find("insufficient_funds").unwrap_or_else(|| panic!("no refused span in:\n{text}"));
    assert!(refused.contains(&format!("from={} to={}", a.0, b.0)), "{refused}");
    assert!(find("wallet_ledger.hold").is_some_and(|l| l.contains("outcome=\"ok\"")), "{text}");
    assert!(find("wallet_ledger.void").is_some_and(|l| l.contains("outcome=\"ok\"")), "{text}");
    let async_funded = find("async-fund-b").unwrap_or_else(|| panic!("no span for the async transfer in:\n{text}"));
    for field in [
        "wallet_ledger.transfer".to_string(),
        format!("from={}", issuer.0),
        format!("to={}", b.0),
        "amount=7".into(),
        "attempts=1".into(),
        "outcome=\"ok\"".into(),
        "lock_wait_us=".into(),
    ] {
        assert!(async_funded.contains(&field), "{field} missing in {async_funded}");
    }
    let async_refused = find("async-too-much").unwrap_or_else(|| panic!("no refused async span in:\n{text}"));
    assert!(async_refused.contains("outcome=\"insufficient_funds\""), "{async_refused}");
    assert!(!text.contains("s3cret-pw"), "a password reached the logs:\n{text}");
    assert!(!text.contains("host="), "a connection string reached the logs:\n{text}");
    Ok(())
}

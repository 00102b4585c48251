//! A ledger function that answers with a row the library cannot read (an unknown outcome, a
//! missing or NULL column) is `LedgerError::UnexpectedRow`, never a panic. The functions are
//! replaced behind the library's back, as a schema out of step with the build would be.

mod common;

use anyhow::Result;
use rust_decimal_macros::dec;
use wallet_ledger::{HoldId, LedgerError, Posting, Transfer};

/// Replaces `wallet_ledger.transfer` with one that answers `body` (a SELECT of its OUT columns).
fn fake_transfer(url: &str, body: &str) -> Result<()> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(&format!(
        "CREATE OR REPLACE FUNCTION wallet_ledger.transfer(
            p_from bigint, p_to bigint, p_amount numeric, p_key text, p_memo text,
            p_lock_mode smallint, p_lock_timeout_ms integer,
            OUT outcome text, OUT transfer_id bigint, OUT from_balance numeric, OUT to_balance numeric,
            OUT account bigint, OUT available numeric, OUT from_currency text, OUT to_currency text,
            OUT currency_scale smallint, OUT lock_wait_us bigint)
        LANGUAGE sql AS $fn$ {body} $fn$"
    ))?;
    Ok(())
}

fn unexpected(result: Result<impl std::fmt::Debug, LedgerError>, function: &str, detail: &str) {
    match result {
        Err(LedgerError::UnexpectedRow { function: f, detail: d }) => {
            assert_eq!(f, function);
            assert!(d.contains(detail), "detail {d:?} does not mention {detail:?}");
        }
        other => panic!("expected UnexpectedRow from {function}, got {other:?}"),
    }
}

#[test]
fn an_unknown_outcome_is_a_typed_error() -> Result<()> {
    let (ledger, url, _issuer, wallets) = common::funded("protocol_outcome", 2, dec!(10))?;
    fake_transfer(&url, "SELECT 'teleported'::text, 1::bigint, 0::numeric, 0::numeric, NULL::bigint, NULL::numeric, NULL::text, NULL::text, NULL::smallint, 0::bigint")?;
    let err = ledger.transfer(&Transfer::new(wallets[0], wallets[1], dec!(1)));
    unexpected(err, "transfer", "teleported");
    Ok(())
}

#[test]
fn a_receipt_with_a_null_column_is_a_typed_error() -> Result<()> {
    let (ledger, url, _issuer, wallets) = common::funded("protocol_null", 2, dec!(10))?;
    fake_transfer(&url, "SELECT 'ok'::text, 7::bigint, NULL::numeric, 0::numeric, NULL::bigint, NULL::numeric, NULL::text, NULL::text, NULL::smallint, 0::bigint")?;
    let err = ledger.transfer(&Transfer::new(wallets[0], wallets[1], dec!(1)));
    unexpected(err, "transfer", "from_balance");
    // A refusal that lacks the data it must carry is the same defect.
    fake_transfer(&url, "SELECT 'insufficient_funds'::text, NULL::bigint, NULL::numeric, NULL::numeric, NULL::bigint, NULL::numeric, NULL::text, NULL::text, NULL::smallint, 0::bigint")?;
    let err = ledger.transfer(&Transfer::new(wallets[0], wallets[1], dec!(1)));
    unexpected(err, "transfer", "account");
    Ok(())
}

#[test]
fn an_outcome_of_another_function_is_a_typed_error() -> Result<()> {
    let (ledger, url, _issuer, wallets) = common::funded("protocol_misplaced", 2, dec!(10))?;
    fake_transfer(&url, "SELECT 'hold_not_found'::text, NULL::bigint, NULL::numeric, NULL::numeric, NULL::bigint, NULL::numeric, NULL::text, NULL::text, NULL::smallint, 0::bigint")?;
    let err = ledger.transfer(&Transfer::new(wallets[0], wallets[1], dec!(1)));
    unexpected(err, "transfer", "hold_not_found");
    Ok(())
}

#[test]
fn malformed_answers_of_void_and_post_are_typed_errors() -> Result<()> {
    let (ledger, url, _issuer, wallets) = common::funded("protocol_void_post", 3, dec!(10))?;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.batch_execute(
        "CREATE OR REPLACE FUNCTION wallet_ledger.void(
            p_hold_id bigint, p_lock_mode smallint, p_lock_timeout_ms integer,
            OUT outcome text, OUT state text)
         LANGUAGE sql AS $fn$ SELECT 'hold_not_pending'::text, 'melted'::text $fn$;
         CREATE OR REPLACE FUNCTION wallet_ledger.post(
            p_accounts bigint[], p_amounts numeric[], p_key text, p_memo text,
            p_lock_mode smallint, p_lock_timeout_ms integer,
            OUT outcome text, OUT transfer_id bigint, OUT balances numeric[], OUT account bigint,
            OUT available numeric, OUT currency text, OUT amount_sum numeric, OUT currency_scale smallint)
         LANGUAGE sql AS $fn$ SELECT 'ok'::text, 5::bigint, ARRAY[1.00]::numeric[], NULL::bigint,
            NULL::numeric, NULL::text, NULL::numeric, NULL::smallint $fn$;",
    )?;
    unexpected(ledger.void(HoldId(1)), "void", "melted");
    let posting = Posting::new().leg(wallets[0], dec!(-2)).leg(wallets[1], dec!(1)).leg(wallets[2], dec!(1));
    unexpected(ledger.post(&posting), "post", "1 balances for 3 legs");
    // The error is not mistaken for a refusal or a retryable failure.
    let err = ledger.void(HoldId(1)).unwrap_err();
    assert_eq!(err.kind(), "unexpected_row");
    assert!(!err.is_retryable());
    Ok(())
}

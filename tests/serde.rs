//! The `serde` feature: every public data type goes to JSON and back unchanged, amounts as
//! decimal strings, cursors as their text. `cargo test --features serde --test serde`.
#![cfg(feature = "serde")]

mod common;

use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use common::funded;
use rust_decimal_macros::dec;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use wallet_ledger::{
    AccountFilter, AccountId, EntryId, Hold, HoldId, HoldState, KeyHolder, LockWait, NewAccount, Posting, Transfer,
    TransferFilter, TransferId,
};

/// `value` to JSON and back; returns the JSON.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> Result<serde_json::Value> {
    let text = serde_json::to_string(value)?;
    let back: T = serde_json::from_str(&text)?;
    assert_eq!(&back, value, "{text}");
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn every_public_data_type_round_trips_through_json() -> Result<()> {
    let (l, _, issuer, w) = funded("serde_round_trip", 2, dec!(100.00))?;
    let account = l.open_account(&NewAccount::new("USD").external_id("user-1").metadata(json!({"tier": "gold"})))?;
    let json = round_trip(&account)?;
    assert_eq!(json["balance"], json!("0"), "amounts are decimal strings");
    assert_eq!(json["metadata"], json!({"tier": "gold"}));
    assert_eq!(json["id"], json!(account.id.0), "ids are bare numbers");

    let receipt = l.transfer(&Transfer::new(w[0], w[1], dec!(1.50)).idempotency_key("k1"))?;
    round_trip(&receipt)?;
    let posting = l.post(&Posting::new().leg(w[0], dec!(-1.00)).leg(w[1], dec!(1.00)))?;
    round_trip(&posting)?;
    for entry in l.history(w[0], None, 10)? {
        round_trip(&entry)?;
    }
    let record = l.find_transfer(receipt.transfer_id)?.expect("committed");
    round_trip(&record)?;
    let page = l.list_transfers(&TransferFilter::new().limit(1))?;
    let json = round_trip(&page)?;
    let cursor = page.next.expect("more than one transfer");
    assert_eq!(json["next"], json!(cursor.to_string()), "a cursor is its text");
    round_trip(&cursor)?;
    round_trip(&l.list_accounts(&AccountFilter::new())?)?;
    let to = SystemTime::now() + Duration::from_secs(60);
    round_trip(&l.statement(w[0], SystemTime::UNIX_EPOCH, to)?)?;

    let hold = Hold::new(w[0], w[1], dec!(2.00)).idempotency_key("h1");
    round_trip(&hold)?;
    let held = l.hold(&hold)?;
    round_trip(&held)?;
    for pending in l.open_holds(w[0], 10)? {
        round_trip(&pending)?;
    }
    assert_eq!(round_trip(&HoldState::Captured)?, json!("captured"));
    round_trip(&KeyHolder::Hold(HoldId(3)))?;
    round_trip(&LockWait::Timeout(Duration::from_millis(250)))?;
    round_trip(&l.verify()?)?;

    // Requests too: a backend can accept them as JSON.
    round_trip(&Transfer::new(issuer, w[0], dec!(3.00)).memo("m"))?;
    round_trip(&NewAccount::new("USD").name("n").metadata(json!({"a": 1})))?;
    round_trip(&AccountFilter::new().currency("USD").metadata(json!({"a": 1})).after(cursor).limit(5))?;
    round_trip(&TransferFilter::new().account(AccountId(1)).created_after(to))?;
    assert_eq!(round_trip(&(AccountId(1), TransferId(2), EntryId(3)))?, json!([1, 2, 3]));
    Ok(())
}

//! A card payment as a payment backend runs it: authorize (hold), then capture what the
//! merchant finally charges, or release the authorization; lapsed authorizations are released
//! by an expiry worker.
//!
//! Runs against `DATABASE_URL`, or a throwaway local PostgreSQL when it is not set:
//!
//! ```sh
//! cargo run --example card_authorization
//! ```

use std::time::Duration;

use rust_decimal_macros::dec;
use wallet_ledger::{Hold, HoldState, Ledger, LedgerError, NewAccount, Transfer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = wallet_ledger_embedded::embedded::fresh_database("card_authorization")?;
    let ledger = Ledger::connect(&url)?;
    ledger.define_currency("EUR", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("EUR").name("issuer").unbounded())?;
    let card = ledger.open_account(&NewAccount::new("EUR").name("cardholder"))?;
    let hotel = ledger.open_account(&NewAccount::new("EUR").name("hotel"))?;
    ledger.transfer(&Transfer::new(issuer.id, card.id, dec!(300.00)).idempotency_key("salary-11"))?;

    // Check-in: the hotel authorizes 250.00 for a week. The money stays on the card but is no
    // longer available for anything else.
    let auth = ledger.hold(
        &Hold::new(card.id, hotel.id, dec!(250.00))
            .expires_in(Duration::from_secs(7 * 24 * 3600))
            .idempotency_key("hotel-booking-77/auth")
            .memo("booking 77"),
    )?;
    println!("authorized: hold {}, available {}", auth.hold_id, ledger.available(card.id)?);

    // The network retries the authorization: same key, same hold, no second reservation.
    let retry = ledger.hold(
        &Hold::new(card.id, hotel.id, dec!(250.00))
            .expires_in(Duration::from_secs(7 * 24 * 3600))
            .idempotency_key("hotel-booking-77/auth")
            .memo("booking 77"),
    )?;
    assert!(retry.replayed && retry.hold_id == auth.hold_id);

    // Meanwhile a 60.00 purchase is refused: only 50.00 is available.
    match ledger.transfer(&Transfer::new(card.id, hotel.id, dec!(60.00))) {
        Err(LedgerError::InsufficientFunds { available, .. }) => println!("refused: only {available} available"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    // Check-out: the final bill is 212.40; the rest of the authorization is released.
    let paid = ledger.capture(auth.hold_id, Some(dec!(212.40)))?;
    println!("captured {} (transfer {}); card balance {}", paid.amount, paid.transfer_id, paid.from_balance);
    assert_eq!(ledger.available(card.id)?, dec!(87.60));

    // A hold ends exactly once.
    match ledger.capture(auth.hold_id, None) {
        Err(LedgerError::HoldNotPending { state: HoldState::Captured, .. }) => println!("second capture refused"),
        other => return Err(format!("expected HoldNotPending, got {other:?}").into()),
    }

    // An authorization nobody captures lapses; an expiry worker releases it.
    let lapsing = ledger.hold(&Hold::new(card.id, hotel.id, dec!(20.00)).expires_in(Duration::from_millis(50)))?;
    std::thread::sleep(Duration::from_millis(100));
    let released = ledger.expire_holds(100)?;
    println!("expiry worker released {released} hold(s); hold {} is over", lapsing.hold_id);
    assert_eq!(ledger.available(card.id)?, dec!(87.60));

    assert!(ledger.verify()?.is_clean());
    Ok(())
}

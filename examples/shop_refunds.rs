//! A shop's refunds and payouts: a customer pays, returns part of the order (a partial
//! reversal), then the rest; a second refund retried after a timeout is applied once; the shop's
//! weekly payout sweeps what is available; a wallet under investigation is frozen; a customer
//! leaving closes their wallet; e-money wallets have a cap.
//!
//! ```sh
//! cargo run --example shop_refunds     # DATABASE_URL, or a throwaway local PostgreSQL
//! ```
//!
//! `tests/shop_refunds_example.rs` runs [`run`] and checks what it returns.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::{AccountStatus, Ledger, LedgerError, NewAccount, Reversal, Transfer};

/// Where the story ends.
#[derive(Debug)]
pub struct Outcome {
    /// The customer's balance after the refunds and closing.
    pub customer_balance: Decimal,
    /// What the shop's payout moved.
    pub payout: Decimal,
    /// The refused refund beyond the order.
    pub over_refund: LedgerError,
    /// The customer's wallet at the end.
    pub customer_status: AccountStatus,
    /// The capped wallet's refusal of a top-up beyond its cap.
    pub capped: LedgerError,
    /// Whether the audit was clean at the end.
    pub audit_clean: bool,
}

/// The story, against the database at `url`.
pub fn run(url: &str) -> Result<Outcome, Box<dyn std::error::Error>> {
    let ledger = Ledger::connect(url)?;
    ledger.define_currency("EUR", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("EUR").name("issuer").unbounded())?.id;
    let bank = ledger.open_account(&NewAccount::new("EUR").name("shop's bank account").unbounded())?.id;
    let customer = ledger.open_account(&NewAccount::new("EUR").name("customer"))?.id;
    let shop = ledger.open_account(&NewAccount::new("EUR").name("shop"))?.id;
    ledger.transfer(&Transfer::new(issuer, customer, dec!(200.00)).idempotency_key("top-up-1"))?;

    // The order: 120.00 for three items.
    let order = ledger.transfer(&Transfer::new(customer, shop, dec!(120.00)).idempotency_key("order-9/pay"))?;

    // One item comes back: a partial refund of 40.00. The client times out and retries with the
    // same key: the refund is applied once, and the retry gets the first receipt.
    let refund = Reversal::of(order.transfer_id).amount(dec!(40.00)).idempotency_key("order-9/refund-1");
    let first = ledger.reverse(&refund)?;
    let retry = ledger.reverse(&refund)?;
    assert!(retry.replayed && retry.transfer_id == first.transfer_id);
    println!("refunded {} to the customer (balance {})", first.amount, first.to_balance);

    // A support agent tries to refund 100.00 more: only 80.00 is left to refund.
    let over_refund = ledger
        .reverse(&Reversal::of(order.transfer_id).amount(dec!(100.00)).idempotency_key("order-9/refund-2"))
        .err()
        .ok_or("a refund beyond the order went through")?;
    println!("refused: {over_refund}");

    // The customer returns everything else: all that is left.
    let rest = ledger.reverse(&Reversal::of(order.transfer_id).idempotency_key("order-9/refund-3"))?;
    println!("refunded the remaining {}", rest.amount);

    // Other sales, then the weekly payout: everything available, up to 10,000.00.
    let other = ledger.open_account(&NewAccount::new("EUR").name("other customer"))?.id;
    ledger.transfer(&Transfer::new(issuer, other, dec!(75.00)))?;
    ledger.transfer(&Transfer::new(other, shop, dec!(75.00)))?;
    let payout =
        ledger.transfer(&Transfer::new(shop, bank, dec!(10000.00)).up_to_available().idempotency_key("payout-w48"))?;
    println!("paid out {} to the shop's bank account", payout.amount);

    // The other customer's wallet is investigated: frozen, it pays nothing, still receives.
    ledger.freeze(other)?;
    ledger.transfer(&Transfer::new(issuer, other, dec!(5.00)))?;
    ledger.unfreeze(other)?;

    // The first customer leaves: the balance goes back to the bank (a sweep), then the wallet closes.
    ledger.transfer(&Transfer::new(customer, issuer, dec!(1000.00)).up_to_available())?;
    let closed = ledger.close(customer)?;

    // An e-money wallet capped at 150.00 refuses a top-up beyond its cap.
    let capped_wallet = ledger.open_account(&NewAccount::new("EUR").name("e-money").max_balance(dec!(150.00)))?.id;
    ledger.transfer(&Transfer::new(issuer, capped_wallet, dec!(100.00)))?;
    let capped = ledger
        .transfer(&Transfer::new(issuer, capped_wallet, dec!(60.00)))
        .err()
        .ok_or("a top-up beyond the cap went through")?;
    println!("refused: {capped}");

    Ok(Outcome {
        customer_balance: closed.balance,
        payout: payout.amount,
        over_refund,
        customer_status: closed.status,
        capped,
        audit_clean: ledger.verify()?.is_clean(),
    })
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = wallet_ledger::embedded::fresh_database("shop_refunds")?;
    run(&url)?;
    Ok(())
}

//! The shop's refunds example, run as a test: it ends where it says.

#[path = "../examples/shop_refunds.rs"]
mod shop_refunds;

use rust_decimal_macros::dec;
use wallet_ledger::{AccountStatus, LedgerError};

#[test]
fn the_shop_refunds_example_runs_and_ends_where_it_says() -> Result<(), Box<dyn std::error::Error>> {
    let url = wallet_ledger::embedded::fresh_database("example_shop_refunds")?;
    let outcome = shop_refunds::run(&url)?;
    assert!(
        matches!(outcome.over_refund, LedgerError::ReversalExceedsOriginal { reversible, .. } if reversible == dec!(80.00))
    );
    assert!(
        matches!(outcome.capped, LedgerError::BalanceLimitExceeded { max_balance, .. } if max_balance == dec!(150.00))
    );
    assert_eq!(outcome.payout, dec!(75.00));
    assert_eq!((outcome.customer_status, outcome.customer_balance), (AccountStatus::Closed, dec!(0)));
    assert!(outcome.audit_clean);
    Ok(())
}

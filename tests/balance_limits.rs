//! Upper limits (max_balance) on every credit path, and limit changes under the row lock that
//! an account's current state must already satisfy.

#[macro_use]
mod common;

use anyhow::Result;
use common::funded;
use rust_decimal_macros::dec;
use wallet_ledger::{Hold, LedgerError, NewAccount, Posting, Reversal, Transfer};

#[test]
fn no_credit_goes_above_the_ceiling() -> Result<()> {
    let (l, _, issuer, w) = funded("ceiling_credits", 2, dec!(100.00))?;
    let capped = l.open_account(&NewAccount::new("USD").name("e-money").max_balance(dec!(150.00)))?;
    assert_eq!(capped.max_balance, Some(dec!(150.00)));
    let capped = capped.id;
    l.transfer(&Transfer::new(issuer, capped, dec!(140.00)))?;
    let is_capped = |account| account == capped;
    let e = refused!(l, l.transfer(&Transfer::new(w[0], capped, dec!(10.01))), LedgerError::BalanceLimitExceeded { account, .. } if is_capped(account));
    assert!(
        matches!(e, LedgerError::BalanceLimitExceeded { max_balance, requested, .. } if max_balance == dec!(150.00) && requested == dec!(10.01))
    );
    refused!(l, l.post(&Posting::new().leg(w[0], dec!(-20.00)).leg(capped, dec!(20.00))), LedgerError::BalanceLimitExceeded { account, .. } if is_capped(account));
    let batch =
        l.transfer_batch(&[Transfer::new(w[0], capped, dec!(6.00)), Transfer::new(w[1], capped, dec!(6.00))])?;
    assert!(batch[0].is_ok());
    assert!(matches!(batch[1], Err(LedgerError::BalanceLimitExceeded { .. })), "{:?}", batch[1]);
    let hold = l.hold(&Hold::new(w[1], capped, dec!(5.00)))?;
    refused!(l, l.capture(hold.hold_id, None), LedgerError::BalanceLimitExceeded { account, .. } if is_capped(account));
    l.capture(hold.hold_id, Some(dec!(4.00)))?;
    assert_eq!(l.balance(capped)?, dec!(150.00));
    // A reversal into a full account is refused like any credit.
    let out = l.transfer(&Transfer::new(capped, w[0], dec!(10.00)))?.transfer_id;
    l.transfer(&Transfer::new(w[1], capped, dec!(10.00)))?;
    refused!(l, l.reverse(&Reversal::of(out)), LedgerError::BalanceLimitExceeded { .. });
    // Exactly at the ceiling is allowed; debits are not limited by it.
    l.transfer(&Transfer::new(capped, w[0], dec!(150.00)))?;
    assert!(l.verify()?.is_clean());
    Ok(())
}

#[test]
fn limits_change_only_when_the_account_already_keeps_them() -> Result<()> {
    let (l, _, _, w) = funded("limit_changes", 2, dec!(100.00))?;
    let a = w[0];
    l.hold(&Hold::new(a, w[1], dec!(30.00)))?;
    let e = refused!(l, l.set_max_balance(a, Some(dec!(99.99))), LedgerError::LimitBreached { account, .. } if account == a);
    assert!(
        matches!(e, LedgerError::LimitBreached { balance, max_balance, .. } if balance == dec!(100.00) && max_balance == Some(dec!(99.99)))
    );
    assert_eq!(l.set_max_balance(a, Some(dec!(100.00)))?.max_balance, Some(dec!(100.00)));
    refused!(l, l.transfer(&Transfer::new(w[1], a, dec!(0.01))), LedgerError::BalanceLimitExceeded { .. });
    assert_eq!(l.set_max_balance(a, None)?.max_balance, None);
    l.transfer(&Transfer::new(w[1], a, dec!(0.01)))?;

    // A credit line can shrink only to what is already used.
    l.set_min_balance(a, Some(dec!(-50.00)))?;
    l.transfer(&Transfer::new(a, w[1], dec!(100.01)))?; // balance -0.00 .. available uses the line
    let e = refused!(l, l.set_min_balance(a, Some(dec!(0))), LedgerError::LimitBreached { .. });
    assert!(
        matches!(e, LedgerError::LimitBreached { held, min_balance, .. } if held == dec!(30.00) && min_balance == Some(dec!(0)))
    );
    assert_eq!(l.set_min_balance(a, Some(dec!(-30.00)))?.min_balance, Some(dec!(-30.00)));
    assert_eq!(l.set_min_balance(a, None)?.min_balance, None);

    refused!(l, l.set_min_balance(a, Some(dec!(0.01))), LedgerError::InvalidAmount { .. });
    refused!(l, l.set_max_balance(a, Some(dec!(-0.01))), LedgerError::InvalidAmount { .. });
    refused!(l, l.set_max_balance(a, Some(dec!(1000.001))), LedgerError::InvalidAmount { .. });
    refused!(l, l.open_account(&NewAccount::new("USD").max_balance(dec!(-1))), LedgerError::InvalidAmount { .. });
    refused!(
        l,
        l.set_max_balance(wallet_ledger::AccountId(987_654), Some(dec!(1))),
        LedgerError::AccountNotFound { .. }
    );
    assert!(l.verify()?.is_clean());
    Ok(())
}

//! Every refusal of the public API: the right typed error, and nothing changed afterwards.

#[macro_use]
mod common;

use anyhow::Result;
use common::{funded, ledger, snapshot};
use rust_decimal_macros::dec;
use wallet_ledger::{AccountId, LedgerError, NewAccount, Transfer};

#[test]
fn non_positive_amounts() -> Result<()> {
    let (l, _, _, w) = funded("nonpositive", 2, dec!(10.00))?;
    refused!(l, l.transfer(&Transfer::new(w[0], w[1], dec!(0))), LedgerError::InvalidAmount { .. });
    refused!(l, l.transfer(&Transfer::new(w[0], w[1], dec!(-0.00))), LedgerError::InvalidAmount { .. });
    refused!(l, l.transfer(&Transfer::new(w[0], w[1], dec!(-1.00))), LedgerError::InvalidAmount { .. });
    Ok(())
}

#[test]
fn more_decimal_places_than_the_currency() -> Result<()> {
    let (l, _, _, w) = funded("scale", 2, dec!(10.00))?;
    let e = refused!(l, l.transfer(&Transfer::new(w[0], w[1], dec!(0.001))), LedgerError::InvalidAmount { .. });
    assert!(e.to_string().contains("2 decimal places"), "{e}");
    refused!(l, l.transfer(&Transfer::new(w[0], w[1], dec!(0.0000000000000000001))), LedgerError::InvalidAmount { .. });
    // Trailing zeros are not decimal places: 1.000 USD is 1.00 USD.
    let r = l.transfer(&Transfer::new(w[0], w[1], dec!(1.000)))?;
    assert_eq!(r.from_balance, dec!(9.00));
    Ok(())
}

#[test]
fn unknown_and_same_account() -> Result<()> {
    let (l, _, _, w) = funded("unknown", 2, dec!(10.00))?;
    let ghost = AccountId(987_654);
    refused!(l, l.transfer(&Transfer::new(ghost, w[0], dec!(1))), LedgerError::AccountNotFound { account } if account == ghost);
    refused!(l, l.transfer(&Transfer::new(w[0], ghost, dec!(1))), LedgerError::AccountNotFound { account } if account == ghost);
    refused!(
        l,
        l.transfer(&Transfer::new(AccountId(i64::MIN), AccountId(i64::MAX), dec!(1))),
        LedgerError::AccountNotFound { .. }
    );
    refused!(l, l.transfer(&Transfer::new(w[0], w[0], dec!(1))), LedgerError::SameAccount { account } if account == w[0]);
    refused!(l, l.account(ghost), LedgerError::AccountNotFound { .. });
    refused!(l, l.balance(ghost), LedgerError::AccountNotFound { .. });
    refused!(l, l.history(ghost, None, 10), LedgerError::AccountNotFound { .. });
    Ok(())
}

#[test]
fn currency_mismatch() -> Result<()> {
    let (l, _, _, w) = funded("mismatch", 1, dec!(10.00))?;
    l.define_currency("EUR", 2)?;
    let eur = l.open_account(&NewAccount::new("EUR"))?.id;
    let e = refused!(l, l.transfer(&Transfer::new(w[0], eur, dec!(1))), LedgerError::CurrencyMismatch { .. });
    assert!(e.to_string().contains("USD") && e.to_string().contains("EUR"), "{e}");
    Ok(())
}

#[test]
fn overdraft_credit_line_and_unbounded() -> Result<()> {
    let (l, _, issuer, w) = funded("overdraft", 2, dec!(10.00))?;
    let e = refused!(l, l.transfer(&Transfer::new(w[0], w[1], dec!(10.01))), LedgerError::InsufficientFunds { .. });
    match e {
        LedgerError::InsufficientFunds { account, available, requested } => {
            assert_eq!((account, available, requested), (w[0], dec!(10.00), dec!(10.01)));
        }
        other => panic!("{other:?}"),
    }
    // Exactly the balance is allowed: the floor is inclusive.
    assert_eq!(l.transfer(&Transfer::new(w[0], w[1], dec!(10.00)))?.from_balance, dec!(0.00));

    let credit = l.open_account(&NewAccount::new("USD").min_balance(dec!(-50.00)))?.id;
    assert_eq!(l.transfer(&Transfer::new(credit, w[0], dec!(50.00)))?.from_balance, dec!(-50.00));
    refused!(l, l.transfer(&Transfer::new(credit, w[0], dec!(0.01))), LedgerError::InsufficientFunds { available, .. } if available == dec!(0));

    let r = l.transfer(&Transfer::new(issuer, w[1], dec!(1000000.00)))?;
    assert_eq!(r.from_balance, dec!(-1000020.00));
    // A balance the ledger could not represent is an amount too large, not a database error.
    refused!(
        l,
        l.transfer(&Transfer::new(issuer, w[1], dec!(1000000000000000000000000000))),
        LedgerError::InvalidAmount { .. }
    );
    Ok(())
}

#[test]
fn idempotent_replay_and_conflict() -> Result<()> {
    let (l, _, _, w) = funded("idem", 3, dec!(10.00))?;
    let t = Transfer::new(w[0], w[1], dec!(4.00)).idempotency_key("order-7").memo("order 7");
    let first = l.transfer(&t)?;
    assert!(!first.replayed);
    let before = snapshot(&l)?;
    let again = l.transfer(&t)?;
    assert!(again.replayed);
    assert_eq!(
        (again.transfer_id, again.from_balance, again.to_balance),
        (first.transfer_id, first.from_balance, first.to_balance)
    );
    assert_eq!(before, snapshot(&l)?, "a replay moved money");

    let other_amount = Transfer::new(w[0], w[1], dec!(5.00)).idempotency_key("order-7").memo("order 7");
    refused!(l, l.transfer(&other_amount), LedgerError::IdempotencyConflict { ref key, existing } if key == "order-7" && existing == wallet_ledger::KeyHolder::Transfer(first.transfer_id));
    let other_to = Transfer::new(w[0], w[2], dec!(4.00)).idempotency_key("order-7").memo("order 7");
    refused!(l, l.transfer(&other_to), LedgerError::IdempotencyConflict { .. });
    let other_memo = Transfer::new(w[0], w[1], dec!(4.00)).idempotency_key("order-7");
    refused!(l, l.transfer(&other_memo), LedgerError::IdempotencyConflict { .. });
    // A refused transfer does not consume its key: once funded, the same request applies.
    let big = Transfer::new(w[2], w[0], dec!(15.00)).idempotency_key("big");
    refused!(l, l.transfer(&big), LedgerError::InsufficientFunds { .. });
    l.transfer(&Transfer::new(w[1], w[2], dec!(5.00)))?;
    assert!(!l.transfer(&big)?.replayed);
    Ok(())
}

#[test]
fn malformed_text_inputs() -> Result<()> {
    let (l, _, _, w) = funded("text", 2, dec!(10.00))?;
    let t = |key: &str| Transfer::new(w[0], w[1], dec!(1)).idempotency_key(key);
    refused!(l, l.transfer(&t("")), LedgerError::InvalidInput { field: "idempotency key", .. });
    refused!(l, l.transfer(&t("~reserved")), LedgerError::InvalidInput { field: "idempotency key", .. });
    refused!(l, l.transfer(&t("nul\0byte")), LedgerError::InvalidInput { field: "idempotency key", .. });
    refused!(l, l.transfer(&t(&"k".repeat(257))), LedgerError::InvalidInput { field: "idempotency key", .. });
    refused!(
        l,
        l.transfer(&Transfer::new(w[0], w[1], dec!(1)).memo("a\0b")),
        LedgerError::InvalidInput { field: "memo", .. }
    );
    refused!(
        l,
        l.open_account(&NewAccount::new("USD").name("x\0y")),
        LedgerError::InvalidInput { field: "account name", .. }
    );
    refused!(l, l.history(w[0], None, 0), LedgerError::InvalidInput { field: "limit", .. });
    // Stored exactly: quotes and SQL in free text are data, never SQL.
    let memo = "'); DELETE FROM wallet_ledger.accounts; --";
    l.transfer(&Transfer::new(w[0], w[1], dec!(1)).memo(memo))?;
    assert_eq!(l.history(w[0], None, 10)?.last().unwrap().memo.as_deref(), Some(memo));
    Ok(())
}

#[test]
fn currencies_and_accounts() -> Result<()> {
    let (l, _) = ledger("currencies")?;
    l.define_currency("JPY", 0)?;
    l.define_currency("JPY", 0)?; // idempotent
    refused!(l, l.define_currency("JPY", 2), LedgerError::CurrencyConflict { existing: 0, requested: 2, .. });
    refused!(l, l.define_currency("jpy", 0), LedgerError::InvalidInput { .. });
    refused!(l, l.define_currency("USD'--", 2), LedgerError::InvalidInput { .. });
    refused!(l, l.define_currency("BTC", 19), LedgerError::InvalidInput { .. });
    refused!(l, l.open_account(&NewAccount::new("XXX")), LedgerError::UnknownCurrency { .. });
    refused!(l, l.open_account(&NewAccount::new("JP\0Y")), LedgerError::UnknownCurrency { .. });
    refused!(l, l.open_account(&NewAccount::new("JPY").min_balance(dec!(-1e24))), LedgerError::InvalidAmount { .. });
    refused!(l, l.open_account(&NewAccount::new("JPY").min_balance(dec!(1))), LedgerError::InvalidAmount { .. });
    refused!(l, l.open_account(&NewAccount::new("JPY").min_balance(dec!(-0.5))), LedgerError::InvalidAmount { .. });
    let a = l.open_account(&NewAccount::new("JPY").name("yen wallet").min_balance(dec!(-100)))?;
    assert_eq!(
        (a.balance, a.min_balance, a.version, a.name.as_deref()),
        (dec!(0), Some(dec!(-100)), 0, Some("yen wallet"))
    );
    assert_eq!(l.account(a.id)?, a);
    assert_eq!(l.open_account(&NewAccount::new("JPY").unbounded())?.min_balance, None);
    Ok(())
}

#[test]
fn history_pages_oldest_first() -> Result<()> {
    let (l, _, issuer, w) = funded("history", 2, dec!(100.00))?;
    for i in 1..=7 {
        l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).memo(format!("p{i}")))?;
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = l.history(w[0], after, 3)?;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = Some(page.last().unwrap().id);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 8);
    assert_eq!(seen[0].counterparty, Some(issuer));
    assert_eq!(seen[0].amount, dec!(100.00));
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(e.account_version, i as i64 + 1);
        assert_eq!(e.account, w[0]);
    }
    assert_eq!(seen[7].balance_after, dec!(93.00));
    assert_eq!(seen[7].amount, dec!(-1.00));
    assert_eq!(seen[7].counterparty, Some(w[1]));
    assert_eq!(seen[7].memo.as_deref(), Some("p7"));
    // A cursor from another account is refused, not silently restarted.
    let other = l.history(w[1], None, 1)?[0].id;
    refused!(l, l.history(w[0], Some(other), 3), LedgerError::InvalidInput { field: "after", .. });
    assert!(l.history(issuer, None, 10)?.len() == 2);
    Ok(())
}

//! The audit is clean after real work and names each violation planted by hand.

mod common;

use anyhow::Result;
use common::funded;
use rust_decimal_macros::dec;
use wallet_ledger::{Transfer, Violation};

#[test]
fn clean_after_work_and_names_planted_violations() -> Result<()> {
    let (l, _, issuer, w) = funded("audit", 4, dec!(50.00))?;
    for i in 0..20 {
        let _ = l.transfer(&Transfer::new(w[i % 4], w[(i + 1) % 4], dec!(3.25)));
    }
    let audit = l.verify()?;
    assert!(audit.is_clean(), "{audit:?}");
    assert_eq!((audit.accounts, audit.transfers, audit.entries), (5, 24, 48));

    let mut conn = l.connection()?;
    // Money created out of nothing on one account.
    conn.client().execute("UPDATE wallet_ledger.accounts SET balance = balance + 1 WHERE id = $1", &[&w[2].0])?;
    let audit = l.verify()?;
    assert!(!audit.is_clean());
    assert!(
        audit.violations.contains(&Violation::Conservation {
            currency: "USD".into(),
            expected: dec!(0),
            actual: dec!(1.00)
        }),
        "{audit:?}"
    );
    assert!(
        audit.violations.iter().any(|v| matches!(v, Violation::BalanceMismatch { account, .. } if *account == w[2])),
        "{audit:?}"
    );
    conn.client().execute("UPDATE wallet_ledger.accounts SET balance = balance - 1 WHERE id = $1", &[&w[2].0])?;
    assert!(l.verify()?.is_clean());

    // A rewritten entry breaks the chain and the transfer's legs.
    conn.client().execute(
        "UPDATE wallet_ledger.entries SET amount = amount + 0.01 WHERE account_id = $1 AND account_version = 2",
        &[&w[0].0],
    )?;
    let audit = l.verify()?;
    assert!(
        audit
            .violations
            .iter()
            .any(|v| matches!(v, Violation::ChainBroken { account, version: 2, .. } if *account == w[0])),
        "{audit:?}"
    );
    assert!(audit.violations.iter().any(|v| matches!(v, Violation::TransferLegs { .. })), "{audit:?}");
    assert!(
        audit.violations.iter().any(|v| matches!(v, Violation::BalanceMismatch { account, .. } if *account == w[0])),
        "{audit:?}"
    );

    // A floor broken behind the constraint's back.
    conn.client().batch_execute("ALTER TABLE wallet_ledger.accounts DROP CONSTRAINT accounts_floor")?;
    conn.client().execute("UPDATE wallet_ledger.accounts SET balance = -5 WHERE id = $1", &[&w[3].0])?;
    let audit = l.verify()?;
    assert!(
        audit.violations.iter().any(|v| matches!(v, Violation::FloorBroken { account, .. } if *account == w[3])),
        "{audit:?}"
    );
    assert!(audit.violations.iter().all(|v| !v.to_string().is_empty()));
    let _ = issuer;
    Ok(())
}

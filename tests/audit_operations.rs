//! The audit's checks of the account rules: clean after real work with reversals, closes and
//! ceilings, and each planted violation (written with the database's own guard dropped) named.

mod common;

use anyhow::Result;
use common::funded;
use rust_decimal_macros::dec;
use wallet_ledger::{NewAccount, Reversal, Transfer, Violation};

#[test]
fn clean_after_work_and_names_planted_violations() -> Result<()> {
    let (l, _, issuer, w) = funded("audit_operations", 3, dec!(50.00))?;
    let paid = l.transfer(&Transfer::new(w[0], w[1], dec!(20.00)))?.transfer_id;
    let refund = l.reverse(&Reversal::of(paid).amount(dec!(5.00)))?.transfer_id;
    let other = l.transfer(&Transfer::new(w[1], w[2], dec!(1.00)))?.transfer_id;
    let capped = l.open_account(&NewAccount::new("USD").max_balance(dec!(10.00)))?.id;
    l.transfer(&Transfer::new(issuer, capped, dec!(10.00)))?;
    let gone = l.open_account(&NewAccount::new("USD"))?.id;
    l.close(gone)?;
    assert!(l.verify()?.is_clean(), "{:?}", l.verify()?);

    let mut conn = l.connection()?;
    let client = conn.client();
    client.batch_execute(
        "ALTER TABLE wallet_ledger.accounts DROP CONSTRAINT accounts_closed_empty, DROP CONSTRAINT accounts_ceiling;
         ALTER TABLE wallet_ledger.transfers DROP CONSTRAINT transfers_reversed",
    )?;
    // Each plant breaks its rule (and, for the closed account, the held sum too).
    client.execute("UPDATE wallet_ledger.accounts SET max_balance = 9.00 WHERE id = $1", &[&capped.0])?;
    client.execute("UPDATE wallet_ledger.accounts SET held = 1.00, min_balance = -1 WHERE id = $1", &[&gone.0])?;
    client.execute("UPDATE wallet_ledger.transfers SET reversed = 21.00 WHERE id = $1", &[&paid.0])?;
    client.execute("UPDATE wallet_ledger.transfers SET reverses = $2 WHERE id = $1", &[&refund.0, &other.0])?;
    let audit = l.verify()?;
    let found = |f: &dyn Fn(&Violation) -> bool| audit.violations.iter().any(f);
    assert!(found(&|v| matches!(v, Violation::CeilingBroken { account, .. } if *account == capped)), "{audit:?}");
    assert!(found(&|v| matches!(v, Violation::ClosedNotEmpty { account, .. } if *account == gone)), "{audit:?}");
    assert!(found(&|v| matches!(v, Violation::OverReversed { transfer, .. } if *transfer == paid)), "{audit:?}");
    assert!(
        found(
            &|v| matches!(v, Violation::ReversalMismatch { reversal, transfer } if *reversal == refund && *transfer == other)
        ),
        "{audit:?}"
    );
    // The reversal moved to `other` also leaves `other` with a reversal total it never recorded.
    assert!(found(&|v| matches!(v, Violation::OverReversed { transfer, .. } if *transfer == other)), "{audit:?}");
    Ok(())
}

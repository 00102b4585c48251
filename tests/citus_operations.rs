//! Citus mode refuses the account rules it does not enforce yet (states, limits, ceilings,
//! reversals) with `Unsupported`, changing nothing; the Citus transfer still works after core
//! migration 7 and Citus migration 3. Skipped (saying why) without Citus, unless
//! `WALLET_LEDGER_REQUIRE_CITUS=1`.

mod citus_common;

use anyhow::Result;
use citus_common::{citus_url, Schema};
use rust_decimal_macros::dec;
use wallet_ledger::{AccountStatus, LedgerError, NewAccount, Reversal, Transfer};

#[test]
fn account_rules_are_refused_in_citus_mode() -> Result<()> {
    let Some(url) = citus_url("account_rules_are_refused_in_citus_mode") else {
        return Ok(());
    };
    let schema = Schema::new(&url, "operations_refused");
    let l = schema.ledger(4)?;
    l.define_currency("USD", 2)?;
    let issuer = l.open_account(&NewAccount::new("USD").unbounded())?.id;
    let a = l.open_account(&NewAccount::new("USD"))?.id;
    fn unsupported<T>(r: Result<T, LedgerError>) -> bool {
        matches!(r, Err(LedgerError::Unsupported { .. }))
    }
    let paid = l.transfer(&Transfer::new(issuer, a, dec!(5.00)).idempotency_key("citus-op-1"))?;
    assert!(l.transfer(&Transfer::new(issuer, a, dec!(5.00)).idempotency_key("citus-op-1"))?.replayed);
    assert!(unsupported(l.freeze(a)));
    assert!(unsupported(l.unfreeze(a)));
    assert!(unsupported(l.close(a)));
    assert!(unsupported(l.set_max_balance(a, Some(dec!(10)))));
    assert!(unsupported(l.set_min_balance(a, None)));
    assert!(unsupported(l.open_account(&NewAccount::new("USD").max_balance(dec!(10)))));
    assert!(unsupported(l.reverse(&Reversal::of(paid.transfer_id))));
    let account = l.account(a)?;
    assert_eq!((account.status, account.max_balance, account.balance), (AccountStatus::Open, None, dec!(5.00)));
    assert!(l.verify()?.is_clean());
    Ok(())
}

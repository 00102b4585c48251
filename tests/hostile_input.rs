//! Hostile input, fuzzed over the public API: NUL bytes, invalid UTF-8,
//! very long strings, amounts of 30 digits or 29 decimal places, negative zero, `i64::MIN`/`MAX`
//! account ids, currency codes with SQL in them. Each value gets a clear typed error (and the
//! ledger does not change) or is stored exactly; nothing panics; a password in a connection
//! string is never echoed. The command line's share is in the `wallet-ledger-cli` crate's
//! tests/hostile_input.rs.

#[macro_use]
mod common;

use common::{funded, snapshot};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::limits::{ACCOUNT_NAME_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX, MEMO_BYTES_MAX};
use wallet_ledger::{AccountId, Ledger, LedgerError, NewAccount, Transfer};

/// Strings a caller could send: empty, NUL bytes, SQL, quotes, multi-byte characters, and
/// lengths around every limit.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("\0".to_string()),
        Just("'; DROP TABLE wallet_ledger.accounts; --".to_string()),
        Just("\\x00\\'\"$1 %s {}".to_string()),
        Just("~".to_string()),
        Just("é€😀\u{202e}\u{feff}".to_string()),
        "[a-z]{1,8}",
        any::<String>(),
    ];
    let composed = prop::collection::vec(pieces, 0..6).prop_map(|v| v.concat());
    let long = (0usize..3, prop::sample::select(vec![255usize, 256, 257, 1023, 1024, 1025, 5000]))
        .prop_map(|(c, n)| ["a", "é", "\0"][c].repeat(n).chars().take(n).collect::<String>());
    prop_oneof![3 => composed, 1 => long]
}

fn text_ok(s: &str, max: usize) -> bool {
    s.len() <= max && !s.contains('\0')
}

/// Decimals across the whole range: every scale 0..=28, both signs, up to 96-bit mantissas.
fn hostile_amount() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), 0u32..=28)
            .prop_map(|(lo, mid, hi, neg, scale)| Decimal::from_parts(lo, mid, hi, neg, scale)),
        (1i64..1_000_000, 0u32..=4).prop_map(|(n, s)| Decimal::new(n, s)),
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        Just(Decimal::from_parts(0, 0, 0, true, 2)), // -0.00
        Just(Decimal::from_parts(1, 0, 0, false, 28)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Keys and memos: refused with `InvalidInput` and nothing changed, or stored byte for byte.
    #[test]
    fn keys_and_memos(key in hostile_text(), memo in hostile_text()) {
        let (l, _, _, w) = funded("hostile_text", 2, dec!(10.00)).expect("ledger");
        let key_ok = text_ok(&key, IDEMPOTENCY_KEY_BYTES_MAX) && !key.is_empty() && !key.starts_with('~');
        let valid = key_ok && text_ok(&memo, MEMO_BYTES_MAX);
        let before = snapshot(&l).expect("snapshot");
        let result = l.transfer(&Transfer::new(w[0], w[1], dec!(1.00)).idempotency_key(key.clone()).memo(memo.clone()));
        if valid {
            let receipt = result.expect("a valid key and memo are accepted");
            let mut conn = l.connection().expect("connection");
            let row = conn.client().query_one(
                "SELECT idempotency_key, memo FROM wallet_ledger.transfers WHERE id = $1", &[&receipt.transfer_id.0],
            ).expect("the transfer");
            prop_assert_eq!(row.get::<_, String>(0), key);
            prop_assert_eq!(row.get::<_, Option<String>>(1), Some(memo));
        } else {
            prop_assert!(matches!(result, Err(LedgerError::InvalidInput { .. })), "{:?}", result);
            prop_assert_eq!(before, snapshot(&l).expect("snapshot"));
        }
    }

    /// Account names: refused or stored exactly.
    #[test]
    fn account_names(name in hostile_text()) {
        let (l, _, _, _) = funded("hostile_name", 0, dec!(0)).expect("ledger");
        let before = snapshot(&l).expect("snapshot");
        let result = l.open_account(&NewAccount::new("USD").name(name.clone()));
        if text_ok(&name, ACCOUNT_NAME_BYTES_MAX) {
            let account = result.expect("a valid name is accepted");
            prop_assert_eq!(l.account(account.id).expect("read back").name, Some(name));
        } else {
            prop_assert!(matches!(result, Err(LedgerError::InvalidInput { .. })), "{:?}", result);
            prop_assert_eq!(before, snapshot(&l).expect("snapshot"));
        }
    }

    /// Amounts anywhere in `Decimal`'s range, between wallets and from the unbounded issuer:
    /// applied exactly, or a typed refusal that changed nothing.
    #[test]
    fn amounts(amount in hostile_amount(), from_issuer in any::<bool>()) {
        let (l, _, issuer, w) = funded("hostile_amount", 2, dec!(10.00)).expect("ledger");
        let from = if from_issuer { issuer } else { w[0] };
        let before = snapshot(&l).expect("snapshot");
        let (from_before, to_before) = (l.balance(from).expect("balance"), l.balance(w[1]).expect("balance"));
        match l.transfer(&Transfer::new(from, w[1], amount)) {
            Ok(r) => {
                prop_assert!(amount > Decimal::ZERO);
                prop_assert_eq!(r.from_balance, from_before - amount);
                prop_assert_eq!(r.to_balance, to_before + amount);
                prop_assert_eq!(l.balance(w[1]).expect("balance"), to_before + amount);
            }
            Err(e) => {
                prop_assert!(
                    matches!(e, LedgerError::InvalidAmount { .. } | LedgerError::InsufficientFunds { .. }),
                    "{:?}", e
                );
                prop_assert_eq!(before, snapshot(&l).expect("snapshot"));
            }
        }
        prop_assert!(l.verify().expect("audit").is_clean());
    }

    /// Account ids at the ends of `i64`, currency codes with SQL in them.
    #[test]
    fn ids_and_currency_codes(from in prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64), Just(-1i64), any::<i64>()],
                              to in prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()],
                              code in hostile_text()) {
        let (l, _, _, _) = funded("hostile_ids", 0, dec!(0)).expect("ledger");
        let before = snapshot(&l).expect("snapshot");
        let result = l.transfer(&Transfer::new(AccountId(from), AccountId(to), dec!(1)));
        prop_assert!(
            matches!(result, Err(LedgerError::AccountNotFound { .. } | LedgerError::SameAccount { .. })),
            "{:?}", result
        );
        let account = l.account(AccountId(from));
        prop_assert!(matches!(account, Err(LedgerError::AccountNotFound { .. })), "{:?}", account);
        let defined = l.define_currency(&code, 2);
        let opened = l.open_account(&NewAccount::new(code.as_str()));
        let shaped = !code.is_empty() && code.len() <= 16
            && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if shaped {
            prop_assert!(defined.is_ok() || matches!(defined, Err(LedgerError::CurrencyConflict { .. })), "{:?}", defined);
        } else {
            prop_assert!(matches!(defined, Err(LedgerError::InvalidInput { .. })), "{:?}", defined);
            prop_assert!(matches!(opened, Err(LedgerError::UnknownCurrency { .. })), "{:?}", opened);
            prop_assert_eq!(before, snapshot(&l).expect("snapshot"));
        }
    }
}

/// A password in a connection string appears in no error message and no `Debug` output,
/// whether the string is malformed or the server unreachable.
#[test]
fn passwords_are_never_echoed() {
    let secret = "Sup3rSecretPw";
    let urls = [
        format!("postgresql://ledger:{secret}@/wallet?host=/nonexistent-dir-for-wl-test"),
        format!("host=/nonexistent-dir-for-wl-test user=ledger password={secret} dbname=wallet"),
        format!("postgresql://ledger:{secret}@[not a host/wallet"),
        format!("host=/nonexistent password='{secret}' bad_option_xyz=1"),
    ];
    for url in &urls {
        let builder = Ledger::builder(url).checkout_timeout(std::time::Duration::from_millis(300));
        assert!(!format!("{builder:?}").contains(secret));
        let err = builder.build().expect_err("nothing listens there");
        let mut text = format!("{err} {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(&format!(" {s} {s:?}"));
            source = s.source();
        }
        assert!(!text.contains(secret), "echoed: {text}");
    }
}

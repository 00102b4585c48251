//! Validation of amounts, floors and currency codes, done in Rust before any database work.

use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::limits::{CURRENCY_CODE_BYTES_MAX, CURRENCY_SCALE_MAX};

/// Checks a transfer amount: strictly positive, and no more decimal places than any currency
/// may have. The currency's own scale is checked on the server, against the locked account.
pub(crate) fn check_transfer_amount(amount: Decimal) -> Result<(), LedgerError> {
    if amount <= Decimal::ZERO {
        return Err(invalid_amount(amount, "must be greater than zero"));
    }
    if significant_scale(amount) > CURRENCY_SCALE_MAX {
        return Err(invalid_amount(amount, "more decimal places than any currency allows"));
    }
    Ok(())
}

/// Checks a floor for a new account of a currency with `scale` decimal places: at most zero
/// (an account opens at zero, so a positive floor would already be broken) and within the scale.
pub(crate) fn check_floor(floor: Decimal, scale: u32) -> Result<(), LedgerError> {
    if floor > Decimal::ZERO {
        return Err(invalid_amount(floor, "a floor (min_balance) must be zero or negative"));
    }
    if floor <= FLOOR_MIN {
        return Err(invalid_amount(floor, "a floor must be above -10^24"));
    }
    if significant_scale(floor) > scale {
        return Err(invalid_amount(floor, &format!("more than {scale} decimal places")));
    }
    Ok(())
}

/// A ceiling (`max_balance`) the `accounts_ceiling` CHECK accepts: zero or positive (an
/// account opens at zero), below 10^24, within the currency's decimal places.
pub(crate) fn check_ceiling(ceiling: Decimal, scale: u32) -> Result<(), LedgerError> {
    if ceiling < Decimal::ZERO {
        return Err(invalid_amount(ceiling, "a ceiling (max_balance) must be zero or positive"));
    }
    if ceiling >= -FLOOR_MIN {
        return Err(invalid_amount(ceiling, "a ceiling must be below 10^24"));
    }
    if significant_scale(ceiling) > scale {
        return Err(invalid_amount(ceiling, &format!("more than {scale} decimal places")));
    }
    Ok(())
}

/// The lowest floor (exclusive), as the `accounts` CHECK says.
const FLOOR_MIN: Decimal = Decimal::from_parts(0xa100_0000, 0x1bce_cced, 0xd3c2, true, 0);

/// Decimal places that carry a non-zero digit: `1.50` has 1, `2.00` has 0.
pub(crate) fn significant_scale(amount: Decimal) -> u32 {
    amount.normalize().scale()
}

/// Whether `code` has the shape of a currency code (`[A-Z0-9_]{1,16}`).
pub(crate) fn is_currency_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= CURRENCY_CODE_BYTES_MAX
        && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a currency code and scale before defining the currency.
pub(crate) fn check_currency(code: &str, scale: u32) -> Result<(), LedgerError> {
    if !is_currency_code(code) {
        return Err(LedgerError::InvalidInput {
            field: "currency code",
            reason: format!("{code:?} is not 1 to {CURRENCY_CODE_BYTES_MAX} characters of A-Z, 0-9, _"),
        });
    }
    if scale > CURRENCY_SCALE_MAX {
        return Err(LedgerError::InvalidInput {
            field: "currency scale",
            reason: format!("{scale} is above the maximum of {CURRENCY_SCALE_MAX}"),
        });
    }
    Ok(())
}

/// Checks free text (names, memos, keys): bounded length and no NUL byte, which PostgreSQL's
/// `text` cannot store.
pub(crate) fn check_text(field: &'static str, value: &str, max_bytes: usize) -> Result<(), LedgerError> {
    if value.len() > max_bytes {
        return Err(LedgerError::InvalidInput {
            field,
            reason: format!("{} bytes, more than the maximum of {max_bytes}", value.len()),
        });
    }
    if value.contains('\0') {
        return Err(LedgerError::InvalidInput { field, reason: "contains a NUL character".into() });
    }
    Ok(())
}

fn invalid_amount(amount: Decimal, reason: &str) -> LedgerError {
    LedgerError::InvalidAmount { amount, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn amounts_must_be_positive() {
        assert!(check_transfer_amount(dec!(0.01)).is_ok());
        assert!(matches!(check_transfer_amount(dec!(0)), Err(LedgerError::InvalidAmount { .. })));
        assert!(matches!(check_transfer_amount(dec!(-0.00)), Err(LedgerError::InvalidAmount { .. })));
        assert!(matches!(check_transfer_amount(dec!(-5)), Err(LedgerError::InvalidAmount { .. })));
    }

    #[test]
    fn trailing_zeros_do_not_count_as_decimal_places() {
        assert_eq!(significant_scale(dec!(2.00)), 0);
        assert_eq!(significant_scale(dec!(1.50)), 1);
        assert_eq!(significant_scale(dec!(0.000000000000000001)), 18);
        assert!(check_transfer_amount(dec!(0.0000000000000000001)).is_err());
    }

    #[test]
    fn floors_are_zero_or_negative_within_scale() {
        assert!(check_floor(dec!(0), 2).is_ok());
        assert!(check_floor(dec!(-100.50), 2).is_ok());
        assert!(check_floor(dec!(0.01), 2).is_err());
        assert!(check_floor(dec!(-1.005), 2).is_err());
        assert!(check_floor(dec!(-999999999999999999999999), 0).is_ok());
        assert!(check_floor(dec!(-1000000000000000000000000), 0).is_err());
        assert_eq!(FLOOR_MIN, dec!(-1000000000000000000000000));
    }

    #[test]
    fn ceilings() {
        assert!(check_ceiling(dec!(0), 2).is_ok());
        assert!(check_ceiling(dec!(150.00), 2).is_ok());
        assert!(check_ceiling(dec!(-0.01), 2).is_err());
        assert!(check_ceiling(dec!(1.005), 2).is_err());
        assert!(check_ceiling(dec!(999999999999999999999999), 0).is_ok());
        assert!(check_ceiling(dec!(1000000000000000000000000), 0).is_err());
    }

    #[test]
    fn currency_codes() {
        assert!(check_currency("USD", 2).is_ok());
        assert!(check_currency("USDT_TRC20", 6).is_ok());
        assert!(check_currency("usd", 2).is_err());
        assert!(check_currency("", 2).is_err());
        assert!(check_currency("US D", 2).is_err());
        assert!(check_currency("USD'; DROP TABLE x;--", 2).is_err());
        assert!(check_currency("USD", 19).is_err());
    }

    #[test]
    fn text_limits() {
        assert!(check_text("memo", "coffee", 10).is_ok());
        assert!(check_text("memo", "coffee and cake", 10).is_err());
        assert!(check_text("memo", "a\0b", 10).is_err());
    }
}

//! Money helpers: amounts are integer minor units plus an ISO 4217
//! currency, and are never mixed across currencies silently.

use std::fmt;

use crate::types::Money;

/// Digits after the decimal point of `currency` (ISO 4217 exponent): 0 for
/// JPY, KRW, ...; 3 for BHD, KWD, ...; 2 otherwise. `XXX` (the contract's
/// "no currency", e.g. an unknown SKU's price) has 0.
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" | "XXX" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

impl Money {
    pub fn new(currency: impl Into<String>, amount_minor: i64) -> Self {
        Money {
            currency: currency.into(),
            amount_minor,
        }
    }

    pub fn zero(currency: impl Into<String>) -> Self {
        Money::new(currency, 0)
    }

    /// The sum, or `None` on a currency mismatch or overflow.
    pub fn checked_add(&self, other: &Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money::new(
            self.currency.clone(),
            self.amount_minor.checked_add(other.amount_minor)?,
        ))
    }

    /// The amount in major units (for display and ratios, not for sums).
    pub fn to_major(&self) -> f64 {
        self.amount_minor as f64 / 10f64.powi(minor_digits(&self.currency) as i32)
    }
}

/// `29.33 USD`, `-5 JPY`, `1.250 KWD`: exact, from the integer amount.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = minor_digits(&self.currency);
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        if digits == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(digits);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency,
            width = digits as usize
        )
    }
}

/// Sums the amounts in `currency`, ignoring other currencies; saturates
/// rather than overflow.
pub fn sum_in<'a>(currency: &str, amounts: impl IntoIterator<Item = &'a Money>) -> i64 {
    amounts
        .into_iter()
        .filter(|m| m.currency == currency)
        .fold(0i64, |acc, m| acc.saturating_add(m.amount_minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_exact_per_currency() {
        assert_eq!(Money::new("USD", 2933).to_string(), "29.33 USD");
        assert_eq!(Money::new("USD", -5).to_string(), "-0.05 USD");
        assert_eq!(Money::new("JPY", 1200).to_string(), "1200 JPY");
        assert_eq!(Money::new("KWD", 1250).to_string(), "1.250 KWD");
        assert_eq!(Money::new("USD", i64::MIN).to_string(), "-92233720368547758.08 USD");
    }

    #[test]
    fn adding_refuses_mixed_currencies_and_overflow() {
        let a = Money::new("USD", 100);
        assert_eq!(a.checked_add(&Money::new("USD", 50)), Some(Money::new("USD", 150)));
        assert_eq!(a.checked_add(&Money::new("EUR", 50)), None);
        assert_eq!(Money::new("USD", i64::MAX).checked_add(&a), None);
        let all = [a.clone(), Money::new("EUR", 7), Money::new("USD", 1)];
        assert_eq!(sum_in("USD", &all), 101);
        assert_eq!(Money::new("USD", 2933).to_major(), 29.33);
    }
}

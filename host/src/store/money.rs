//! Money: the `Amount` a client sends, ISO 4217 currencies and their
//! minor-unit exponents, the stored `Money`, exact decimal parsing and
//! formatting, the amount ceiling and exact SQL sums. Interactions,
//! products and customer statistics all use it, so it is no area's own.
//!
//! Money never touches floating point: amounts arrive as decimal strings (or
//! JSON numbers, taken by their shortest textual form) and are converted
//! exactly to integer minor units using the currency's ISO 4217 exponent.
//! Every amount (an interaction's, a line's total, a unit or catalogue
//! price) is at most [`MAX_AMOUNT_MINOR`] minor units in absolute value, and
//! sums are taken exactly ([`exact_sum_sql`]): no input can overflow them.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{StoreError, StoreResult};

/// The ceiling on any amount, in minor units (10^15: USD 10 trillion).
/// Far above any real purchase, and far enough below `i64::MAX` that a
/// customer's total stays exact for over nine thousand purchases at the
/// ceiling (totals beyond `i64::MAX` minor units are capped, see
/// [`saturate`]).
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// An amount as given by a client: a decimal string (`"29.33"`) or a JSON
/// number (`29.33`). Kept as text until its currency is known, because only
/// the currency says how many decimals are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Amount(String);

/// Documented as what it accepts: a string or a number.
impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .description(Some(
                "An amount: a decimal string (`\"29.33\"`) or a JSON number (`29.33`, at most 15 significant \
                 digits), with at most as many decimals as its currency has, and at most 10^15 minor units in \
                 absolute value.",
            ))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .into()
    }
}

impl utoipa::ToSchema for Amount {}

impl Amount {
    pub fn new(text: impl Into<String>) -> Amount {
        Amount(text.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Exact conversion to minor units of `currency` (already validated).
    pub fn to_minor(&self, field: &str, currency: &Currency) -> StoreResult<i64> {
        decimal_to_minor(&self.0, currency.exponent).map_err(|problem| {
            StoreError::invalid(
                field,
                match problem {
                    DecimalProblem::Syntax => format!("{:?} is not a decimal number", self.0),
                    DecimalProblem::TooPrecise => {
                        format!(
                            "{} amounts have at most {} decimal places",
                            currency.code, currency.exponent
                        )
                    }
                    DecimalProblem::TooLarge => too_large(currency),
                },
            )
        })
    }
}

/// The message for an amount above [`MAX_AMOUNT_MINOR`].
pub(super) fn too_large(currency: &Currency) -> String {
    format!(
        "exceeds the ceiling of {} {} ({MAX_AMOUNT_MINOR} minor units)",
        format_minor(MAX_AMOUNT_MINOR, currency.exponent),
        currency.code
    )
}

/// SQL selecting the exact sum of the BIGINT expression `column` as two
/// BIGINT columns, `{alias}_hi` (sum of the high parts, `column / 2^32`) and
/// `{alias}_lo` (sum of the low parts). Neither part's sum can overflow for
/// fewer than 2^31 rows, on either backend (SQLite's `SUM` raises "integer
/// overflow", PostgreSQL's `SUM(bigint)` is a numeric that a cast to BIGINT
/// would refuse); [`exact_sum`] puts them back together.
pub(super) fn exact_sum_sql(column: &str, alias: &str) -> String {
    format!(
        "CAST(COALESCE(SUM(({column}) / 4294967296), 0) AS BIGINT) AS {alias}_hi, \
         CAST(COALESCE(SUM(({column}) % 4294967296), 0) AS BIGINT) AS {alias}_lo"
    )
}

/// The sum selected by [`exact_sum_sql`] (both backends truncate integer
/// division towards zero, so `hi * 2^32 + lo` is each value again).
pub(super) fn exact_sum(row: &AnyRow, alias: &str) -> StoreResult<i128> {
    let hi: i64 = row.try_get(format!("{alias}_hi").as_str())?;
    let lo: i64 = row.try_get(format!("{alias}_lo").as_str())?;
    Ok(i128::from(hi) * (1i128 << 32) + i128::from(lo))
}

/// A total in `i64`, capped at `i64::MAX` (or `-i64::MAX`): reachable only
/// by millions of amounts at the ceiling, and better a capped figure than a
/// customer whose statistics cannot be read.
pub fn saturate(total: i128) -> i64 {
    i64::try_from(total).unwrap_or(if total < 0 { -i64::MAX } else { i64::MAX })
}

/// JSON numbers with more significant digits than an f64 keeps exactly
/// would silently change value, so they must be sent as strings.
const MAX_NUMBER_DIGITS: usize = 15;

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        struct AmountVisitor;
        impl Visitor<'_> for AmountVisitor {
            type Value = Amount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a decimal amount, as a string (\"29.33\") or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
                // serde_json's shortest round-trip form: 29.33 -> "29.33".
                let text = serde_json::Number::from_f64(v)
                    .map(|n| n.to_string())
                    .ok_or_else(|| E::custom("amount is not a finite number"))?;
                let mantissa = text.split(['e', 'E']).next().unwrap_or("");
                let digits = mantissa
                    .chars()
                    .filter(char::is_ascii_digit)
                    .skip_while(|c| *c == '0')
                    .count();
                if digits > MAX_NUMBER_DIGITS {
                    return Err(E::custom(format!(
                        "amount {text} has more than {MAX_NUMBER_DIGITS} significant digits; send it as a decimal string"
                    )));
                }
                Ok(Amount(text))
            }
        }
        d.deserialize_any(AmountVisitor)
    }
}

/// A validated ISO 4217 currency with a minor unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency {
    pub code: String,
    /// Number of decimals of the minor unit (USD 2, JPY 0, BHD 3).
    pub exponent: u32,
}

impl Currency {
    /// Accepts an ISO 4217 code (any case); codes without a minor unit
    /// (gold, testing, "no currency") are refused.
    pub fn parse(field: &str, code: &str) -> StoreResult<Currency> {
        let upper = code.trim().to_ascii_uppercase();
        match iso_currency::Currency::from_code(&upper).and_then(|c| c.exponent()) {
            Some(exponent) => Ok(Currency {
                code: upper,
                exponent: u32::from(exponent),
            }),
            None => Err(StoreError::invalid(
                field,
                format!("{code:?} is not an ISO 4217 currency with a minor unit"),
            )),
        }
    }
}

/// Money as the API returns it: `{"currency":"USD","amount":"29.33","amount_minor":2933}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Money {
    pub currency: String,
    /// Exact decimal string with the currency's number of decimals.
    pub amount: String,
    /// The same amount in minor units (cents).
    pub amount_minor: i64,
}

impl Money {
    pub fn new(currency: &Currency, amount_minor: i64) -> Money {
        Money {
            currency: currency.code.clone(),
            amount: format_minor(amount_minor, currency.exponent),
            amount_minor,
        }
    }
    /// Money read back from the database; an unknown currency there is corruption.
    pub fn stored(currency: &str, amount_minor: i64) -> StoreResult<Money> {
        let c = Currency::parse("currency", currency)
            .map_err(|_| StoreError::Corrupt(format!("unknown stored currency {currency:?}")))?;
        Ok(Money::new(&c, amount_minor))
    }
}

/// A price or amount given as money: `{"currency":"USD","amount":"9.99"}`.
/// `amount_minor` may be echoed back (from a GET) but must then agree.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyInput {
    pub currency: String,
    pub amount: Amount,
    #[serde(default)]
    pub amount_minor: Option<i64>,
}

impl MoneyInput {
    pub fn validate(&self, field: &str) -> StoreResult<Money> {
        let currency = Currency::parse(&format!("{field}.currency"), &self.currency)?;
        let minor = self.amount.to_minor(&format!("{field}.amount"), &currency)?;
        if let Some(given) = self.amount_minor
            && given != minor
        {
            return Err(StoreError::invalid(
                format!("{field}.amount_minor"),
                "does not match amount",
            ));
        }
        Ok(Money::new(&currency, minor))
    }
}

/// `2933, 2` -> `"29.33"`; `-5, 2` -> `"-0.05"`; `500, 0` -> `"500"`.
pub fn format_minor(minor: i64, exponent: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs}");
    }
    let unit = 10u64.pow(exponent);
    format!("{sign}{}.{:0width$}", abs / unit, abs % unit, width = exponent as usize)
}

#[derive(Debug, PartialEq, Eq)]
enum DecimalProblem {
    Syntax,
    TooPrecise,
    TooLarge,
}

/// Exact decimal text (`-12.50`, `1e-2`, `3`) to minor units with `exponent`
/// decimals. Trailing zeros beyond the exponent are fine (`"1.500"` USD is
/// 150); any other extra digit is `TooPrecise`, never rounded.
fn decimal_to_minor(text: &str, exponent: u32) -> Result<i64, DecimalProblem> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, power) = match rest.find(['e', 'E']) {
        Some(i) => {
            let power: i32 = rest[i + 1..].parse().map_err(|_| DecimalProblem::Syntax)?;
            (&rest[..i], power)
        }
        None => (rest, 0),
    };
    if !(-60..=60).contains(&power) {
        return Err(if power > 0 {
            DecimalProblem::TooLarge
        } else {
            DecimalProblem::TooPrecise
        });
    }
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return Err(DecimalProblem::Syntax),
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !all_digits(int_part) || !all_digits(frac_part) {
        return Err(DecimalProblem::Syntax);
    }
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    // value = digits * 10^-scale; minor = digits * 10^shift
    let shift = exponent as i32 + power - frac_part.len() as i32;
    let kept = if shift >= 0 {
        digits
    } else {
        let dropped = (-shift) as usize;
        let cut = digits.len().saturating_sub(dropped);
        if !digits[cut..].bytes().all(|b| b == b'0') {
            return Err(DecimalProblem::TooPrecise);
        }
        &digits[..cut]
    };
    if kept.len() > 30 {
        return Err(DecimalProblem::TooLarge);
    }
    let mut value: u128 = if kept.is_empty() {
        0
    } else {
        kept.parse().map_err(|_| DecimalProblem::Syntax)?
    };
    if shift > 0 && value != 0 {
        let factor = 10u128.checked_pow(shift as u32).ok_or(DecimalProblem::TooLarge)?;
        value = value.checked_mul(factor).ok_or(DecimalProblem::TooLarge)?;
    }
    if value > MAX_AMOUNT_MINOR as u128 {
        return Err(DecimalProblem::TooLarge);
    }
    // In range: at most 10^15 in absolute value.
    let value = value as i64;
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_convert_exactly() {
        assert_eq!(decimal_to_minor("29.33", 2), Ok(2933));
        assert_eq!(decimal_to_minor("0.1", 2), Ok(10));
        assert_eq!(decimal_to_minor("-0.05", 2), Ok(-5));
        assert_eq!(decimal_to_minor("1.500", 2), Ok(150));
        assert_eq!(decimal_to_minor("1.005", 2), Err(DecimalProblem::TooPrecise));
        assert_eq!(decimal_to_minor("500", 0), Ok(500));
        assert_eq!(decimal_to_minor("500.5", 0), Err(DecimalProblem::TooPrecise));
        assert_eq!(decimal_to_minor("1e2", 2), Ok(10000));
        assert_eq!(decimal_to_minor("1e-2", 2), Ok(1));
        assert_eq!(decimal_to_minor("0.000", 2), Ok(0));
        assert_eq!(decimal_to_minor("1.234", 3), Ok(1234));
        assert_eq!(decimal_to_minor("10000000000000", 2), Ok(MAX_AMOUNT_MINOR));
        assert_eq!(decimal_to_minor("-10000000000000.00", 2), Ok(-MAX_AMOUNT_MINOR));
        for too_large in [
            "10000000000000.01",
            "92233720368547758.07",
            "92233720368547758.08",
            "1e40",
        ] {
            assert_eq!(
                decimal_to_minor(too_large, 2),
                Err(DecimalProblem::TooLarge),
                "{too_large}"
            );
        }
        for bad in ["", "-", "1.", ".5", "1,5", "abc", "1e", "0x10", " 1"] {
            assert_eq!(decimal_to_minor(bad, 2), Err(DecimalProblem::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn totals_saturate_instead_of_wrapping() {
        assert_eq!(saturate(42), 42);
        assert_eq!(saturate(i128::from(i64::MAX) * 3), i64::MAX);
        assert_eq!(saturate(i128::from(i64::MIN) * 3), -i64::MAX);
    }

    #[test]
    fn money_formats_with_the_exponent() {
        assert_eq!(format_minor(2933, 2), "29.33");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(500, 0), "500");
        assert_eq!(format_minor(1234, 3), "1.234");
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn json_numbers_use_their_shortest_form() {
        let a: Amount = serde_json::from_str("29.33").unwrap();
        assert_eq!(a.as_str(), "29.33");
        let a: Amount = serde_json::from_str("0.1").unwrap();
        assert_eq!(a.as_str(), "0.1");
        let a: Amount = serde_json::from_str("12").unwrap();
        assert_eq!(a.as_str(), "12");
        assert!(serde_json::from_str::<Amount>("1234567890.1234567").is_err());
        assert!(serde_json::from_str::<Amount>("true").is_err());
    }
}

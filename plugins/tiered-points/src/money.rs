//! Formatting amounts and rates for the human-readable reasons on ledger
//! entries and tier changes ("purchase of 123.45 USD at Gold rate 2x").

/// Minor units as a decimal amount when the unit is a power of ten
/// (12345, 100 → "123.45"), else the raw minor units.
pub(crate) fn format_minor(amount_minor: i64, minor_units_per_unit: i64) -> String {
    let mut decimals = 0usize;
    let mut unit = minor_units_per_unit;
    while unit > 1 && unit % 10 == 0 {
        unit /= 10;
        decimals += 1;
    }
    if unit != 1 || decimals == 0 {
        return amount_minor.to_string();
    }
    let sign = if amount_minor < 0 { "-" } else { "" };
    let magnitude = amount_minor.unsigned_abs();
    let scale = 10u64.pow(decimals as u32);
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = decimals
    )
}

/// A rate in thousandths as "2x", "1.5x", "1.25x".
pub(crate) fn format_rate(rate_milli: i64) -> String {
    let whole = rate_milli / 1000;
    let fraction = rate_milli % 1000;
    if fraction == 0 {
        format!("{whole}x")
    } else {
        let digits = format!("{fraction:03}");
        format!("{whole}.{}x", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(format_minor(12345, 100), "123.45");
        assert_eq!(format_minor(5, 100), "0.05");
        assert_eq!(format_minor(-250, 100), "-2.50");
        assert_eq!(format_minor(1200, 1), "1200");
        assert_eq!(format_minor(1234, 1000), "1.234");
        assert_eq!(format_minor(77, 60), "77");
    }

    #[test]
    fn rates() {
        assert_eq!(format_rate(2000), "2x");
        assert_eq!(format_rate(1500), "1.5x");
        assert_eq!(format_rate(1250), "1.25x");
        assert_eq!(format_rate(5), "0.005x");
    }
}

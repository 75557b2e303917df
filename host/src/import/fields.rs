//! Field parsers shared by the importers: times, money, counts. Each returns
//! a short, value-free reason on failure ("not a date"), because reasons are
//! grouped in the summary and a reason that embeds the bad value would make
//! every rejected row its own group.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// Parses `2024-05-01T10:00:00Z` (RFC 3339) or a bare `2024-05-01`, which
/// means midnight UTC of that day.
pub fn parse_time(text: &str) -> Result<OffsetDateTime, &'static str> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let date_only = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    if date_only {
        let year = text[0..4].parse::<i32>().ok();
        let month = text[5..7].parse::<u8>().ok();
        let day = text[8..10].parse::<u8>().ok();
        if let (Some(y), Some(m), Some(d)) = (year, month, day) {
            return calendar_midnight_utc(y, m, d).ok_or("not a valid calendar date");
        }
    }
    Err("expected RFC 3339 (2024-05-01T10:00:00Z) or YYYY-MM-DD")
}

/// Parses a compact `YYYYMMDD` date (the CDNOW format) as midnight UTC.
pub fn parse_compact_date(text: &str) -> Result<OffsetDateTime, &'static str> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected YYYYMMDD");
    }
    // All ASCII digits, so these parses cannot fail; map anyway rather than unwrap.
    let year = text[0..4].parse::<i32>().map_err(|_| "expected YYYYMMDD")?;
    let month = text[4..6].parse::<u8>().map_err(|_| "expected YYYYMMDD")?;
    let day = text[6..8].parse::<u8>().map_err(|_| "expected YYYYMMDD")?;
    calendar_midnight_utc(year, month, day).ok_or("not a valid calendar date")
}

fn calendar_midnight_utc(year: i32, month: u8, day: u8) -> Option<OffsetDateTime> {
    let month = Month::try_from(month).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc())
}

/// Parses a non-negative decimal with at most two fraction digits
/// (`11.77`, `12`, `0.5`) into minor units (cents), exactly: no floating
/// point anywhere, so `0.1 + 0.2` problems cannot creep into totals.
pub fn parse_cents(text: &str) -> Result<i64, &'static str> {
    const REASON: &str = "expected a non-negative amount with at most 2 decimals";
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 2 {
        return Err(REASON);
    }
    let whole: i64 = whole.parse().map_err(|_| "amount too large")?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        let f: i64 = fraction.parse().map_err(|_| REASON)?;
        if fraction.len() == 1 { f * 10 } else { f }
    };
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(fraction))
        .ok_or("amount too large")
}

/// Formats minor units back as a decimal string (`1177` -> `11.77`).
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Parses a strictly positive count (a quantity).
pub fn parse_positive(text: &str) -> Result<i64, &'static str> {
    match text.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err("must be a positive integer"),
        Err(_) => Err("not an integer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1997-01-02").unwrap().unix_timestamp(), 852_163_200);
        assert_eq!(
            parse_time("1997-01-02T00:00:00Z").unwrap().unix_timestamp(),
            852_163_200
        );
        assert_eq!(
            parse_time("1997-01-02T01:00:00+01:00").unwrap().unix_timestamp(),
            852_163_200
        );
        assert!(parse_time("1997-02-30").is_err());
        assert!(parse_time("02/01/1997").is_err());
        assert!(parse_time("").is_err());
        assert_eq!(parse_compact_date("19970102").unwrap().unix_timestamp(), 852_163_200);
        assert!(parse_compact_date("19971301").is_err());
        assert!(parse_compact_date("1997012").is_err());
    }

    #[test]
    fn cents() {
        assert_eq!(parse_cents("11.77"), Ok(1177));
        assert_eq!(parse_cents("12"), Ok(1200));
        assert_eq!(parse_cents("0.5"), Ok(50));
        assert_eq!(parse_cents("0.00"), Ok(0));
        assert_eq!(
            parse_cents("1.234").unwrap_err(),
            "expected a non-negative amount with at most 2 decimals"
        );
        assert!(parse_cents("-1.00").is_err());
        assert!(parse_cents(".5").is_err());
        assert!(parse_cents("1e3").is_err());
        assert!(parse_cents("99999999999999999999").is_err());
        assert_eq!(format_cents(1177), "11.77");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(0), "0.00");
    }

    #[test]
    fn counts() {
        assert_eq!(parse_positive("3"), Ok(3));
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("-2").is_err());
        assert!(parse_positive("two").is_err());
    }
}

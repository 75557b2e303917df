//! The BG/NBD sufficient statistics (x, t_x, T) of one customer, built the
//! way the paper's data and the `lifetimes` package
//! (`summary_data_from_transaction_data`, `freq="D"`) build them.
//!
//! Purchase times are floored to UTC days and several purchases on the same
//! day count once (a "purchase day"), so x is the number of *repeat purchase
//! days*. Purchases on days after the calibration end's day are ignored.
//! t_x and T are measured in whole days from the first purchase day and then
//! expressed in the model's time unit (`time_unit_days`, 7 for weeks).

use serde::{Deserialize, Serialize};

/// Milliseconds in one day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// (x, t_x, T) of one customer, times in the model's time unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CustomerSummary {
    /// x: number of repeat purchases (purchase days after the first).
    pub frequency: u32,
    /// t_x: time from the first to the last purchase.
    pub recency: f64,
    /// T: time from the first purchase to the end of the calibration period.
    pub age: f64,
}

/// The UTC day number of an epoch-ms timestamp (floor, also for negative
/// times).
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

/// Summarises a customer's purchase timestamps (epoch ms, any order) against
/// the calibration end. `None` when the customer has no purchase on or
/// before the calibration end's day: BG/NBD says nothing about them.
pub fn summarise_purchases(
    purchase_times_ms: &[i64],
    calibration_end_ms: i64,
    time_unit_days: f64,
) -> Option<CustomerSummary> {
    let end_day = day_of(calibration_end_ms);
    let mut days: Vec<i64> = purchase_times_ms
        .iter()
        .map(|&t| day_of(t))
        .filter(|&d| d <= end_day)
        .collect();
    days.sort_unstable();
    days.dedup();
    let first = *days.first()?;
    let last = *days.last()?;
    Some(CustomerSummary {
        frequency: u32::try_from(days.len() - 1).unwrap_or(u32::MAX),
        recency: (last - first) as f64 / time_unit_days,
        age: (end_day - first) as f64 / time_unit_days,
    })
}

/// The summary of a host-computed purchase aggregate: x = purchases - 1,
/// t_x = last - first, T = end - first (all on UTC days). Exact when the host
/// counts purchase days; `None` without purchases or when the first purchase
/// is after the calibration end.
pub fn summarise_aggregate(
    purchases: u32,
    first_purchase_at: Option<i64>,
    last_purchase_at: Option<i64>,
    calibration_end_ms: i64,
    time_unit_days: f64,
) -> Option<CustomerSummary> {
    if purchases == 0 {
        return None;
    }
    let first = day_of(first_purchase_at?);
    let end_day = day_of(calibration_end_ms);
    if first > end_day {
        return None;
    }
    // A last purchase after the end (or before the first, which would be a
    // host bug) is clamped into [first, end].
    let last = day_of(last_purchase_at.unwrap_or(first_purchase_at?)).clamp(first, end_day);
    let frequency = if last == first { 0 } else { purchases - 1 };
    Some(CustomerSummary {
        frequency,
        recency: (last - first) as f64 / time_unit_days,
        age: (end_day - first) as f64 / time_unit_days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MS_PER_DAY;

    #[test]
    fn same_day_purchases_count_once_and_later_days_are_ignored() {
        // Day 0 twice, day 14, day 21 at 23:59; end is day 28 at 10:00; a
        // purchase later on day 28 counts (whole days), day 29 does not.
        let times = [
            3_600_000,
            7_200_000,
            14 * DAY,
            22 * DAY - 60_000,
            28 * DAY + 20 * 3_600_000,
            29 * DAY,
        ];
        let s = summarise_purchases(&times, 28 * DAY + 10 * 3_600_000, 7.0).unwrap();
        assert_eq!(s.frequency, 3);
        assert_eq!(s.recency, 4.0);
        assert_eq!(s.age, 4.0);
    }

    #[test]
    fn one_purchase_has_zero_frequency_and_recency() {
        let s = summarise_purchases(&[10 * DAY], 17 * DAY, 1.0).unwrap();
        assert_eq!((s.frequency, s.recency, s.age), (0, 0.0, 7.0));
    }

    #[test]
    fn no_purchase_before_the_end_gives_none() {
        assert_eq!(summarise_purchases(&[], 10 * DAY, 7.0), None);
        assert_eq!(summarise_purchases(&[11 * DAY], 10 * DAY, 7.0), None);
    }

    #[test]
    fn negative_times_floor_to_the_earlier_day() {
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY - 1), 0);
    }

    #[test]
    fn aggregates_map_to_the_same_statistics() {
        let s = summarise_aggregate(4, Some(0), Some(14 * DAY + 5), 28 * DAY, 7.0).unwrap();
        assert_eq!((s.frequency, s.recency, s.age), (3, 2.0, 4.0));
        assert_eq!(summarise_aggregate(0, None, None, 28 * DAY, 7.0), None);
        assert_eq!(summarise_aggregate(1, Some(30 * DAY), None, 28 * DAY, 7.0), None);
    }
}

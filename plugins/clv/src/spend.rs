//! A customer's (x, t_x, T) and monetary value m in one currency, built the
//! way `lifetimes`' `summary_data_from_transaction_data(...,
//! monetary_value_col=..., freq="D")` builds them.
//!
//! Purchases are floored to UTC days and the amounts of one day are summed
//! into one "purchase day"; days after the calibration end's day are
//! ignored. x = purchase days − 1, t_x and T as in [`crate::summary`], and m
//! is the mean amount of the *repeat* purchase days (the first day is left
//! out, as Gamma-Gamma models the spend of repeat transactions), in major
//! units; 0 when x = 0 (lifetimes' `fillna(0)`).

use serde::{Deserialize, Serialize};

use crate::summary::{CustomerSummary, day_of};

/// What the models need of one customer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpendSummary {
    /// (x, t_x, T) in the model's time unit.
    pub summary: CustomerSummary,
    /// m: mean spend of the repeat purchase days, in major units (0 when
    /// x = 0).
    pub monetary: f64,
}

/// Summarises one customer's purchases in the scored currency as
/// (epoch ms, amount in minor units) pairs, any order, against the
/// calibration end. `minor_digits` is the currency's exponent (2 for USD).
/// `None` when no purchase falls on or before the calibration end's day.
pub fn summarise_spend(
    purchases: &[(i64, i64)],
    calibration_end_ms: i64,
    time_unit_days: f64,
    minor_digits: u32,
) -> Option<SpendSummary> {
    let end_day = day_of(calibration_end_ms);
    let mut days: Vec<(i64, i64)> = purchases
        .iter()
        .map(|&(at, minor)| (day_of(at), minor))
        .filter(|&(d, _)| d <= end_day)
        .collect();
    days.sort_unstable_by_key(|&(d, _)| d);
    // Sum the amounts of each day in place (i128: no overflow whatever a
    // plugin is sent).
    let mut merged: Vec<(i64, i128)> = Vec::with_capacity(days.len());
    for (d, minor) in days {
        match merged.last_mut() {
            Some((last, sum)) if *last == d => *sum += i128::from(minor),
            _ => merged.push((d, i128::from(minor))),
        }
    }
    let first = merged.first()?.0;
    let last = merged.last()?.0;
    let repeat = &merged[1..];
    let monetary = if repeat.is_empty() {
        0.0
    } else {
        let total: i128 = repeat.iter().map(|&(_, s)| s).sum();
        total as f64 / repeat.len() as f64 / 10f64.powi(minor_digits as i32)
    };
    Some(SpendSummary {
        summary: CustomerSummary {
            frequency: u32::try_from(repeat.len()).unwrap_or(u32::MAX),
            recency: (last - first) as f64 / time_unit_days,
            age: (end_day - first) as f64 / time_unit_days,
        },
        monetary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::MS_PER_DAY;

    const DAY: i64 = MS_PER_DAY;

    #[test]
    fn same_day_amounts_add_up_and_the_first_day_is_left_out() {
        // Day 0: 10.00 + 5.00 (first day, not in m); day 7: 20.00 + 1.50;
        // day 14: 3.00; day 30 after the end: ignored.
        let purchases = [
            (DAY + 1, 1000),
            (DAY + 2, 500),
            (8 * DAY, 2000),
            (8 * DAY + 5, 150),
            (15 * DAY, 300),
            (31 * DAY, 99_999),
        ];
        let s = summarise_spend(&purchases, 29 * DAY, 7.0, 2).unwrap();
        assert_eq!(s.summary.frequency, 2);
        assert_eq!(s.summary.recency, 2.0);
        assert_eq!(s.summary.age, 4.0);
        assert_eq!(s.monetary, (21.50 + 3.00) / 2.0);
    }

    #[test]
    fn one_purchase_day_has_no_monetary_value() {
        let s = summarise_spend(&[(0, 500), (10, 700)], 7 * DAY, 7.0, 2).unwrap();
        assert_eq!((s.summary.frequency, s.monetary), (0, 0.0));
        assert_eq!(summarise_spend(&[(8 * DAY, 1)], 7 * DAY, 7.0, 2), None);
        assert_eq!(summarise_spend(&[], 7 * DAY, 7.0, 2), None);
    }

    #[test]
    fn the_currency_exponent_sets_the_major_unit() {
        let s = summarise_spend(&[(0, 1), (DAY, 1500)], 7 * DAY, 1.0, 0).unwrap();
        assert_eq!(s.monetary, 1500.0);
    }
}

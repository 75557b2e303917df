//! The discounted customer lifetime value, computed exactly as `lifetimes`
//! 0.11.3's `GammaGammaFitter.customer_lifetime_value` (its
//! `utils._customer_lifetime_value`) does:
//!
//! CLV = Σ_{k=1..H} E[M | x, m] · (E[X(k·f) | x, t_x, T] − E[X((k−1)·f) | x, t_x, T]) / (1 + d)^k
//!
//! with H the horizon in months, d the monthly discount rate, f the model's
//! time units per month (lifetimes: 4.345 weeks, 30 days) and E[X(t) | …]
//! BG/NBD's conditional expected number of purchases. Each month's
//! purchases are discounted to the end of that month.

use serde::{Deserialize, Serialize};

use crate::gamma_gamma::SpendParams;
use crate::model::{ModelError, Params};
use crate::spend::SpendSummary;

/// One customer's lifetime value and the numbers it is made of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClvParts {
    /// E[X(H·f) | x, t_x, T]: purchases expected over the whole horizon,
    /// undiscounted.
    pub expected_purchases: f64,
    /// E[M | x, m]: expected spend per purchase, in major units.
    pub expected_spend: f64,
    /// P(alive | x, t_x, T).
    pub p_alive: f64,
    /// The discounted value, in major units.
    pub clv: f64,
}

/// CLV of one customer over `months` months at `discount_rate` per month,
/// `periods_per_month` model time units per month.
pub fn customer_lifetime_value(
    bgnbd: &Params,
    spend: &SpendParams,
    customer: &SpendSummary,
    months: u32,
    discount_rate: f64,
    periods_per_month: f64,
) -> Result<ClvParts, ModelError> {
    let s = &customer.summary;
    let expected_spend = spend.conditional_expected_spend(s.frequency, customer.monetary);
    let p_alive = bgnbd.p_alive(s)?;
    let mut clv = 0.0;
    let mut before = 0.0;
    for k in 1..=months {
        // As lifetimes: t = k·f and the previous month's t − f.
        let t = f64::from(k) * periods_per_month;
        let cumulative = bgnbd.conditional_expected_purchases(t, s)?;
        if k > 1 {
            before = bgnbd.conditional_expected_purchases(t - periods_per_month, s)?;
        }
        clv += expected_spend * (cumulative - before) / (1.0 + discount_rate).powf(t / periods_per_month);
        before = cumulative;
    }
    Ok(ClvParts {
        expected_purchases: before,
        expected_spend,
        p_alive,
        clv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::CustomerSummary;

    /// `lifetimes`' fits on the CDNOW sample (weeks); tests/cdnow.rs
    /// checks every customer against the library itself.
    const BGNBD: Params = Params {
        r: 0.24259454342106715,
        alpha: 4.413602716077379,
        a: 0.7929218333480146,
        b: 2.4259057287223023,
    };
    const SPEND: SpendParams = SpendParams {
        p: 6.249572277637132,
        q: 3.744224674758082,
        v: 15.44352101835793,
    };

    #[test]
    fn matches_lifetimes_on_three_cdnow_customers() {
        // customer_lifetime_value(bgf, ..., time=12, discount_rate=0.01,
        // freq="W") of sample customers 1, 2, 3.
        for (x, t_x, t, m, want) in [
            (2, 213.0 / 7.0, 272.0 / 7.0, 22.345, 36.27397745115865),
            (1, 12.0 / 7.0, 272.0 / 7.0, 11.77, 4.640936126483654),
            (0, 0.0, 272.0 / 7.0, 0.0, 8.344480971583977),
        ] {
            let customer = SpendSummary {
                summary: CustomerSummary {
                    frequency: x,
                    recency: t_x,
                    age: t,
                },
                monetary: m,
            };
            let got = customer_lifetime_value(&BGNBD, &SPEND, &customer, 12, 0.01, 4.345).unwrap();
            assert!(((got.clv - want) / want).abs() < 1e-9, "{} vs {want}", got.clv);
            let total = BGNBD
                .conditional_expected_purchases(12.0 * 4.345, &customer.summary)
                .unwrap();
            assert!((got.expected_purchases - total).abs() < 1e-12);
        }
    }

    #[test]
    fn no_discount_is_purchases_times_spend_and_zero_months_is_zero() {
        let customer = SpendSummary {
            summary: CustomerSummary {
                frequency: 3,
                recency: 20.0,
                age: 30.0,
            },
            monetary: 40.0,
        };
        let v = customer_lifetime_value(&BGNBD, &SPEND, &customer, 6, 0.0, 4.345).unwrap();
        assert!((v.clv - v.expected_purchases * v.expected_spend).abs() < 1e-9);
        let discounted = customer_lifetime_value(&BGNBD, &SPEND, &customer, 6, 0.02, 4.345).unwrap();
        assert!(discounted.clv < v.clv);
        let none = customer_lifetime_value(&BGNBD, &SPEND, &customer, 0, 0.01, 4.345).unwrap();
        assert_eq!((none.clv, none.expected_purchases), (0.0, 0.0));
    }
}

//! The BG/NBD model itself: parameters, the per-customer log-likelihood,
//! P(alive | x, t_x, T) and E[X(t) | x, t_x, T], following Fader, Hardie &
//! Lee (2005), equations (6), (13) and (10).
//!
//! Times (t_x, T, α, t) share one unit; r, a and b are unit-free.

use serde::{Deserialize, Serialize};

use crate::summary::CustomerSummary;

/// The four BG/NBD parameters: purchase rates λ ~ Gamma(shape r, rate α),
/// drop-out probabilities p ~ Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// Why a model quantity could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("invalid parameters: r, alpha, a and b must be finite and positive")]
    InvalidParams,
    #[error("invalid customer summary: need finite 0 <= t_x <= T, got t_x={recency}, T={age}")]
    InvalidSummary { recency: f64, age: f64 },
    #[error("invalid horizon {0}: must be finite and >= 0")]
    InvalidHorizon(f64),
    #[error("hypergeometric series did not converge (horizon too long relative to alpha + T)")]
    NoConvergence,
}

/// Iteration cap of the hypergeometric series. Terms shrink like z^n with
/// z = t / (α + T + t), so this only binds for horizons some 10^5 times
/// longer than α + T.
const MAX_SERIES_TERMS: usize = 5_000_000;

impl Params {
    /// Checks that every parameter is finite and positive.
    pub fn validate(&self) -> Result<(), ModelError> {
        let ok = [self.r, self.alpha, self.a, self.b]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0);
        if ok { Ok(()) } else { Err(ModelError::InvalidParams) }
    }

    /// ln L(r, α, a, b | x, t_x, T) of one customer (paper, equation 6),
    /// evaluated in log space: the two terms of the likelihood are combined
    /// with log-sum-exp so that large x or T cannot underflow.
    pub fn log_likelihood(&self, s: &CustomerSummary) -> f64 {
        let Params { r, alpha, a, b } = *self;
        let x = f64::from(s.frequency);
        let ln_a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let ln_a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let ln_a3 = -(r + x) * (alpha + s.age).ln();
        if s.frequency == 0 {
            return ln_a1 + ln_a2 + ln_a3;
        }
        let ln_a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + s.recency).ln();
        ln_a1 + ln_a2 + log_add_exp(ln_a3, ln_a4)
    }

    /// P(alive | x, t_x, T) (paper, equation 13): 1 for customers without
    /// repeat purchases, since in BG/NBD drop-out happens only right after a
    /// purchase.
    pub fn p_alive(&self, s: &CustomerSummary) -> Result<f64, ModelError> {
        self.validate()?;
        check_summary(s)?;
        Ok(self.p_alive_unchecked(s))
    }

    fn p_alive_unchecked(&self, s: &CustomerSummary) -> f64 {
        if s.frequency == 0 {
            return 1.0;
        }
        let Params { r, alpha, a, b } = *self;
        let x = f64::from(s.frequency);
        // ln of a/(b+x-1) * ((α+T)/(α+t_x))^(r+x); 1/(1+e^v) is the
        // logistic of -v, computed without overflow for large v.
        let v = a.ln() - (b + x - 1.0).ln() + (r + x) * ((alpha + s.age).ln() - (alpha + s.recency).ln());
        if v > 0.0 {
            let e = (-v).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + v.exp())
        }
    }

    /// E[X(t) | x, t_x, T]: the expected number of purchases in the next `t`
    /// time units of a customer with history (x, t_x, T) (paper, equation
    /// 10).
    ///
    /// The paper's 2F1(r+x, b+x; a+b+x-1; z) with z = t/(α+T+t) is rewritten
    /// with Euler's transformation, 2F1(A,B;C;z) = (1-z)^(C-A-B)
    /// 2F1(C-A,C-B;C;z), into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z):
    /// its terms no longer grow like n^(r+x) before decaying, so the
    /// series neither overflows for heavy buyers nor cancels
    /// catastrophically. Dividing by (a-1) is done analytically (the
    /// (a-1)_n Pochhammer factor), so a = 1 is not a singularity.
    pub fn conditional_expected_purchases(&self, t: f64, s: &CustomerSummary) -> Result<f64, ModelError> {
        self.validate()?;
        check_summary(s)?;
        if !(t.is_finite() && t >= 0.0) {
            return Err(ModelError::InvalidHorizon(t));
        }
        if t == 0.0 {
            return Ok(0.0);
        }
        let Params { r, alpha, a, b } = *self;
        let x = f64::from(s.frequency);
        let c = a + b + x - 1.0;
        let z = t / (alpha + s.age + t);
        // ln(1 - z), computed from the ratio to keep precision for small z.
        let ln_one_minus_z = ((alpha + s.age) / (alpha + s.age + t)).ln();
        let eps = a - 1.0;
        // (1 - (1-z)^eps) / eps, continuous at eps = 0.
        let head = if eps == 0.0 {
            -ln_one_minus_z
        } else {
            -(eps * ln_one_minus_z).exp_m1() / eps
        };
        let series = tail_series(a + b - 1.0 - r, a, c, z)?;
        let bracket = head - (eps * ln_one_minus_z).exp() * series;
        Ok(c * bracket * self.p_alive_unchecked(s))
    }

    /// E[X(t)]: expected purchases in the first `t` time units of a new
    /// customer (paper, equation 9); equation 10 with x = t_x = T = 0.
    pub fn expected_purchases(&self, t: f64) -> Result<f64, ModelError> {
        let new = CustomerSummary {
            frequency: 0,
            recency: 0.0,
            age: 0.0,
        };
        self.conditional_expected_purchases(t, &new)
    }
}

/// S = Σ_{n≥1} (p)_n (q)_{n-1} z^n / ((c)_n n!), which is
/// (2F1(p, q-1; c; z) - 1) / (q-1) written without the division.
fn tail_series(p: f64, q: f64, c: f64, z: f64) -> Result<f64, ModelError> {
    let mut term = p * z / c;
    let mut sum = 0.0;
    let mut n = 1.0;
    for _ in 0..MAX_SERIES_TERMS {
        if term == 0.0 {
            return Ok(sum);
        }
        sum += term;
        let ratio = (p + n) * (q + n - 1.0) * z / ((c + n) * (n + 1.0));
        term *= ratio;
        n += 1.0;
        // Once the ratio is below 1 the remaining terms shrink at least
        // geometrically (their ratio tends to z < 1); bound the tail by
        // |next| / (1 - ρ) with ρ the larger of the current ratio and z.
        let rho = ratio.abs().max(z);
        if rho < 1.0 && term.abs() / (1.0 - rho) <= 1e-17 * sum.abs() {
            return Ok(sum + term);
        }
    }
    Err(ModelError::NoConvergence)
}

fn check_summary(s: &CustomerSummary) -> Result<(), ModelError> {
    let ok = s.recency.is_finite() && s.age.is_finite() && s.recency >= 0.0 && s.recency <= s.age;
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidSummary {
            recency: s.recency,
            age: s.age,
        })
    }
}

/// ln Γ(v) for v > 0 (libm's port of the FreeBSD/musl implementation,
/// accurate to about 1 ulp and available on wasm32).
pub(crate) fn ln_gamma(v: f64) -> f64 {
    libm::lgamma(v)
}

/// ψ(v) = d/dv ln Γ(v) for v > 0: the recurrence ψ(v) = ψ(v+1) - 1/v up
/// to v ≥ 10, then the asymptotic series (error below 1e-15 there).
pub(crate) fn digamma(mut v: f64) -> f64 {
    let mut acc = 0.0;
    while v < 10.0 {
        acc -= 1.0 / v;
        v += 1.0;
    }
    let inv2 = 1.0 / (v * v);
    let series = inv2
        * (1.0 / 12.0
            - inv2
                * (1.0 / 120.0
                    - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 * (1.0 / 132.0 - inv2 * 691.0 / 32760.0)))));
    acc + v.ln() - 0.5 / v - series
}

/// ψ′(v) = d²/dv² ln Γ(v) for v > 0 (the Hessian of the fit): the
/// recurrence ψ′(v) = ψ′(v+1) + 1/v² up to v ≥ 10, then the asymptotic
/// series 1/v + 1/(2v²) + Σ B₂ₖ/v^(2k+1) (error below 1e-15 there).
pub(crate) fn trigamma(mut v: f64) -> f64 {
    let mut acc = 0.0;
    while v < 10.0 {
        acc += 1.0 / (v * v);
        v += 1.0;
    }
    let inv = 1.0 / v;
    let inv2 = inv * inv;
    let series = inv2
        * inv
        * (1.0 / 6.0
            - inv2
                * (1.0 / 30.0
                    - inv2 * (1.0 / 42.0 - inv2 * (1.0 / 30.0 - inv2 * (5.0 / 66.0 - inv2 * 691.0 / 2730.0)))));
    acc + inv + 0.5 * inv2 + series
}

/// ln(e^p + e^q) without overflow.
fn log_add_exp(p: f64, q: f64) -> f64 {
    let m = p.max(q);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((p - m).exp() + (q - m).exp()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published CDNOW estimates (Fader, Hardie & Lee 2005, weeks).
    const PAPER: Params = Params {
        r: 0.2426,
        alpha: 4.4135,
        a: 0.7929,
        b: 2.4258,
    };

    fn cust(x: u32, t_x: f64, t: f64) -> CustomerSummary {
        CustomerSummary {
            frequency: x,
            recency: t_x,
            age: t,
        }
    }

    fn assert_rel(got: f64, want: f64, tol: f64) {
        let rel = ((got - want) / want).abs();
        assert!(rel <= tol, "got {got}, want {want}, relative error {rel:e}");
    }

    /// Reference values from `lifetimes` 0.11.3 (`BetaGeoFitter` with
    /// `params_` set to PAPER): `conditional_probability_alive` and
    /// `conditional_expected_number_of_purchases_up_to_time`, which use
    /// scipy's hyp2f1 on the untransformed formula.
    const REFERENCE: &[(u32, f64, f64, f64, f64, f64)] = &[
        // (x, t_x, T, t, P(alive), E[X(t) | x, t_x, T])
        (2, 30.43, 38.86, 52.0, 0.7266079973001562, 1.5585840056700448),
        (1, 1.71, 38.86, 52.0, 0.21222445924803884, 0.2599047609465544),
        (0, 0.0, 38.86, 52.0, 1.0, 0.25167302746953163),
        (7, 29.43, 38.86, 39.0, 0.6417971241369419, 3.337216959610111),
        (5, 36.14, 38.14, 52.0, 0.862948760427946, 4.199175482831314),
        (14, 37.0, 38.86, 52.0, 0.9123260002422033, 11.480809080740958),
        (3, 5.0, 38.0, 52.0, 0.040634779402345264, 0.12560444096223128),
        (50, 30.0, 38.0, 500.0, 0.0017799322145654346, 0.3063946843333182),
        (1, 1.0, 2.0, 1000.0, 0.712506189334395, 13.849715993522544),
        (0, 0.0, 0.0, 52.0, 1.0, 1.44406222198838),
    ];

    #[test]
    fn p_alive_and_conditional_expectation_match_lifetimes() {
        for &(x, t_x, t_cal, t, p_ref, e_ref) in REFERENCE {
            let s = cust(x, t_x, t_cal);
            assert_rel(PAPER.p_alive(&s).unwrap(), p_ref, 1e-9);
            let e = PAPER.conditional_expected_purchases(t, &s).unwrap();
            assert_rel(e, e_ref, 1e-9);
        }
    }

    #[test]
    fn unconditional_expectation_matches_lifetimes() {
        // `expected_number_of_purchases_up_to_time(52)` and `(39)`.
        assert_rel(PAPER.expected_purchases(52.0).unwrap(), 1.44406222198838, 1e-9);
        assert_rel(PAPER.expected_purchases(39.0).unwrap(), 1.1950518784094886, 1e-9);
    }

    #[test]
    fn digamma_and_trigamma_match_known_values() {
        // ψ(1) = -γ, ψ(1/2) = -γ - 2 ln 2, ψ(10) from tables; ψ′(1) = π²/6,
        // ψ′(1/2) = π²/2, ψ′(10) from tables.
        let gamma = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + gamma).abs() < 1e-14);
        assert!((digamma(0.5) + gamma + 2.0 * 2f64.ln()).abs() < 1e-14);
        assert!((digamma(10.0) - 2.251_752_589_066_721).abs() < 1e-14);
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        assert_rel(trigamma(1.0), pi2 / 6.0, 1e-13);
        assert_rel(trigamma(0.5), pi2 / 2.0, 1e-13);
        assert_rel(trigamma(10.0), 0.105_166_335_681_685_75, 1e-13);
        // Each agrees with a central difference of the one below.
        for v in [0.2426, 3.7, 12.5, 400.0] {
            let fd = (ln_gamma(v + 1e-6) - ln_gamma(v - 1e-6)) / 2e-6;
            assert!((digamma(v) - fd).abs() < 1e-6 * (1.0 + fd.abs()), "ψ({v})");
            let fd = (digamma(v + 1e-5) - digamma(v - 1e-5)) / 2e-5;
            assert_rel(trigamma(v), fd, 1e-7);
        }
    }

    #[test]
    fn no_repeat_purchases_means_alive() {
        assert_eq!(PAPER.p_alive(&cust(0, 0.0, 30.0)).unwrap(), 1.0);
    }

    #[test]
    fn zero_horizon_expects_nothing() {
        let e = PAPER.conditional_expected_purchases(0.0, &cust(3, 10.0, 20.0)).unwrap();
        assert_eq!(e, 0.0);
    }

    #[test]
    fn a_equal_to_one_is_the_limit_of_its_neighbours() {
        let s = cust(3, 20.0, 38.0);
        let at = |a: f64| Params { a, ..PAPER }.conditional_expected_purchases(52.0, &s).unwrap();
        let mid = at(1.0);
        assert!(mid.is_finite() && mid > 0.0);
        assert_rel(mid, (at(1.0 - 1e-6) + at(1.0 + 1e-6)) / 2.0, 1e-9);
    }

    #[test]
    fn invalid_inputs_are_errors_not_panics() {
        let bad = Params { r: -1.0, ..PAPER };
        assert_eq!(bad.p_alive(&cust(1, 1.0, 2.0)), Err(ModelError::InvalidParams));
        assert!(matches!(
            PAPER.p_alive(&cust(1, 3.0, 2.0)),
            Err(ModelError::InvalidSummary { .. })
        ));
        assert!(matches!(
            PAPER.conditional_expected_purchases(f64::NAN, &cust(1, 1.0, 2.0)),
            Err(ModelError::InvalidHorizon(_))
        ));
    }
}

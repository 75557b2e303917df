//! The Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee
//! 2005, "RFM and CLV: Using iso-value curves for customer base analysis";
//! Hardie's note 025, "The Gamma-Gamma model of monetary value"), as
//! `lifetimes`' `GammaGammaFitter` implements it.
//!
//! A customer's transactions are worth z_i ~ Gamma(p, ν) each, and ν varies
//! across customers as Gamma(q, v). Given a customer's x repeat
//! transactions with mean m, the likelihood is Hardie's equation (1a) and
//! the expected spend of their next transaction is
//! E[M | x, m] = (1 − w)·v·p/(q − 1) + w·m with w = p·x/(p·x + q − 1):
//! a weighted average of the population mean and their own mean.
//!
//! The fit maximises the mean log-likelihood over (ln p, ln q, ln v) with
//! churn-bgnbd's Nelder-Mead, restarted until it stops improving, on
//! amounts rescaled so that their mean is 1 (v scales with the money unit;
//! p and q are unit-free), then polishes the optimum with safeguarded
//! Newton steps on the analytic gradient until it vanishes to rounding.

use serde::{Deserialize, Serialize};

use crate::model::digamma;
use crate::model::ln_gamma;
use crate::optimize::nelder_mead;

/// p, q, v: transaction values ~ Gamma(p, ν), ν ~ Gamma(q, v). v is in the
/// currency's major units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpendParams {
    pub p: f64,
    pub q: f64,
    pub v: f64,
}

/// What the fit found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GammaGammaFit {
    pub params: SpendParams,
    /// Total log-likelihood of the fitted customers at `params`.
    pub log_likelihood: f64,
    /// Customers fitted (x ≥ 1 and m > 0).
    pub customers: usize,
    /// Objective evaluations spent by Nelder-Mead.
    pub evaluations: usize,
    /// Max-norm of the gradient of the mean log-likelihood with respect to
    /// the log-parameters at the optimum (≈ 0 when converged).
    pub gradient_norm: f64,
}

/// Why the spend model could not be fitted or used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GammaGammaError {
    #[error("no customer with a repeat purchase and a positive spend: the Gamma-Gamma parameters are not identifiable")]
    NotIdentifiable,
    #[error("customer #{index}: need x >= 1 and a finite m > 0, got x={frequency}, m={monetary}")]
    InvalidRow {
        index: usize,
        frequency: u32,
        monetary: f64,
    },
    #[error("the likelihood has no interior maximum ({0} runs off to its bound)")]
    Degenerate(&'static str),
    #[error("q = {0} <= 1: the population's mean spend v*p/(q-1) is not finite")]
    NoFiniteMean(f64),
    #[error("the optimiser did not converge (gradient norm {0:e})")]
    NoConvergence(f64),
    #[error("invalid spend parameters: p, v must be finite and positive and q > 1")]
    InvalidParams,
}

const BOUND: f64 = 30.0;
const NAMES: [&str; 3] = ["p", "q", "v"];

impl SpendParams {
    /// Finite, positive, and q > 1 (a finite population mean).
    pub fn validate(&self) -> Result<(), GammaGammaError> {
        let finite = [self.p, self.q, self.v].iter().all(|v| v.is_finite() && *v > 0.0);
        if finite && self.q > 1.0 {
            Ok(())
        } else {
            Err(GammaGammaError::InvalidParams)
        }
    }

    /// ln L(p, q, v | x, m) of one customer with x ≥ 1 repeat transactions
    /// of mean m > 0 (Hardie's note 025, equation 1a; `lifetimes`'
    /// `_negative_log_likelihood` term by term).
    pub fn log_likelihood(&self, frequency: u32, monetary: f64) -> f64 {
        let SpendParams { p, q, v } = *self;
        let x = f64::from(frequency);
        let px = p * x;
        ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q) + q * v.ln() + (px - 1.0) * monetary.ln() + px * x.ln()
            - (px + q) * (x * monetary + v).ln()
    }

    /// The population's mean spend per transaction, v·p/(q − 1).
    pub fn mean_spend(&self) -> f64 {
        self.v * self.p / (self.q - 1.0)
    }

    /// E[M | x, m]: the expected spend per transaction of a customer with x
    /// repeat transactions of mean m (`lifetimes`'
    /// `conditional_expected_average_profit`); the population mean when
    /// x = 0.
    pub fn conditional_expected_spend(&self, frequency: u32, monetary: f64) -> f64 {
        let SpendParams { p, q, .. } = *self;
        let x = f64::from(frequency);
        let w = p * x / (p * x + q - 1.0);
        (1.0 - w) * self.mean_spend() + w * monetary
    }
}

/// Fits (p, q, v) by maximum likelihood over (x, m) rows, each with x ≥ 1
/// and m > 0 (the caller leaves the others out and counts them).
pub fn fit(rows: &[(u32, f64)]) -> Result<GammaGammaFit, GammaGammaError> {
    if rows.is_empty() {
        return Err(GammaGammaError::NotIdentifiable);
    }
    for (index, &(frequency, monetary)) in rows.iter().enumerate() {
        if frequency == 0 || !(monetary.is_finite() && monetary > 0.0) {
            return Err(GammaGammaError::InvalidRow {
                index,
                frequency,
                monetary,
            });
        }
    }
    let mean_m = rows.iter().map(|r| r.1).sum::<f64>() / rows.len() as f64;
    let scaled: Vec<(u32, f64)> = rows.iter().map(|&(x, m)| (x, m / mean_m)).collect();
    let mean_ll = |theta: &[f64]| -> f64 {
        let params = to_params(theta);
        scaled.iter().map(|&(x, m)| params.log_likelihood(x, m)).sum::<f64>() / scaled.len() as f64
    };
    let objective = |theta: &[f64]| -> f64 {
        if theta.iter().any(|t| t.abs() > BOUND) {
            return f64::INFINITY;
        }
        -mean_ll(theta)
    };

    // Nelder-Mead, restarted from its own result with a fresh, smaller
    // simplex (undoing any premature collapse) until it stops improving.
    let mut theta = vec![0.0; 3];
    let mut best = objective(&theta);
    let mut evaluations = 0;
    let mut step = 0.5;
    for _ in 0..20 {
        // The mean log-likelihood is only known to ~1e-15 (a sum of many
        // terms), so asking for less spread than that never converges;
        // Newton polishing below finishes the job.
        let m = nelder_mead(objective, &theta, step, 1e-14, 1e-9, 40_000);
        evaluations += m.evaluations;
        let moved = m.x.iter().zip(&theta).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        let improved = best - m.value;
        if m.value <= best {
            theta = m.x;
            best = m.value;
        }
        if m.converged && improved <= 1e-14 && moved <= 1e-8 {
            break;
        }
        step = 0.05;
    }
    newton_polish(&scaled, &mut theta, &mean_ll);
    if let Some(i) = theta.iter().position(|t| t.abs() >= BOUND - 1.0) {
        return Err(GammaGammaError::Degenerate(NAMES[i]));
    }
    let gradient = gradient(&scaled, &theta);
    let gradient_norm = gradient.iter().fold(0.0, |m: f64, g| m.max(g.abs()));
    if gradient.iter().any(|g| !g.is_finite()) || gradient_norm > 1e-6 {
        return Err(GammaGammaError::NoConvergence(gradient_norm));
    }
    let unit = to_params(&theta);
    let params = SpendParams {
        v: unit.v * mean_m,
        ..unit
    };
    if params.q <= 1.0 {
        return Err(GammaGammaError::NoFiniteMean(params.q));
    }
    let log_likelihood = rows.iter().map(|&(x, m)| params.log_likelihood(x, m)).sum();
    Ok(GammaGammaFit {
        params,
        log_likelihood,
        customers: rows.len(),
        evaluations,
        gradient_norm,
    })
}

fn to_params(theta: &[f64]) -> SpendParams {
    SpendParams {
        p: theta[0].exp(),
        q: theta[1].exp(),
        v: theta[2].exp(),
    }
}

/// Safeguarded Newton iterations on the log-parameters (as churn-bgnbd's
/// fit does): a step is kept only if it shrinks the gradient without
/// lowering the likelihood beyond rounding, so polishing can never make
/// Nelder-Mead's answer worse; it lands where the gradient vanishes.
fn newton_polish(rows: &[(u32, f64)], theta: &mut Vec<f64>, mean_ll: &dyn Fn(&[f64]) -> f64) {
    let norm = |g: &[f64; 3]| g.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
    for _ in 0..20 {
        let g = gradient(rows, theta);
        if norm(&g) <= 1e-14 {
            return;
        }
        let h = 1e-5;
        let mut hess = [[0.0; 3]; 3];
        for j in 0..3 {
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[j] += h;
            down[j] -= h;
            let (gu, gd) = (gradient(rows, &up), gradient(rows, &down));
            for i in 0..3 {
                hess[i][j] = (gu[i] - gd[i]) / (2.0 * h);
            }
        }
        let Some(delta) = crate::optimize::solve(hess, g.map(|v| -v)) else {
            return;
        };
        let candidate: Vec<f64> = theta.iter().zip(&delta).map(|(t, d)| t + d).collect();
        if candidate.iter().any(|t| !t.is_finite() || t.abs() > BOUND) {
            return;
        }
        let (now, next) = (mean_ll(theta), mean_ll(&candidate));
        let better = next >= now - 1e-12 * (1.0 + now.abs()) && norm(&gradient(rows, &candidate)) < norm(&g);
        if !better {
            return;
        }
        *theta = candidate;
    }
}

/// Gradient of the mean log-likelihood with respect to (ln p, ln q, ln v).
fn gradient(rows: &[(u32, f64)], theta: &[f64]) -> [f64; 3] {
    let SpendParams { p, q, v } = to_params(theta);
    let mut g = [0.0; 3];
    for &(frequency, m) in rows {
        let x = f64::from(frequency);
        let px = p * x;
        let d_p = x * (digamma(px + q) - digamma(px) + m.ln() + x.ln() - (x * m + v).ln());
        let d_q = digamma(px + q) - digamma(q) + v.ln() - (x * m + v).ln();
        let d_v = q / v - (px + q) / (x * m + v);
        for (gk, d) in g.iter_mut().zip([d_p * p, d_q * q, d_v * v]) {
            *gk += d;
        }
    }
    g.map(|s| s / rows.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lifetimes`' fit on the CDNOW sample (tests/cdnow.rs refits it).
    const CDNOW: SpendParams = SpendParams {
        p: 6.249572277637132,
        q: 3.744224674758082,
        v: 15.44352101835793,
    };

    #[test]
    fn expected_spend_matches_lifetimes() {
        // `conditional_expected_average_profit` of CDNOW customers 1, 2, 3
        // (x = 2, m = 22.345; x = 1, m = 11.77; x = 0).
        for (x, m, want) in [
            (2, 22.345, 24.65391871323464),
            (1, 11.77, 18.910018475337225),
            (0, 0.0, 35.170371330453996),
        ] {
            let got = CDNOW.conditional_expected_spend(x, m);
            assert!(((got - want) / want).abs() < 1e-12, "{got} vs {want}");
        }
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let rows = [(1, 0.4), (3, 1.7), (2, 0.9), (7, 1.1)];
        let theta = [0.8, 0.5, -0.3];
        let g = gradient(&rows, &theta);
        let mean = |t: &[f64]| {
            let p = to_params(t);
            rows.iter().map(|&(x, m)| p.log_likelihood(x, m)).sum::<f64>() / rows.len() as f64
        };
        for k in 0..3 {
            let (mut up, mut down) = (theta, theta);
            up[k] += 1e-6;
            down[k] -= 1e-6;
            let fd = (mean(&up) - mean(&down)) / 2e-6;
            assert!((g[k] - fd).abs() < 1e-7, "component {k}: {} vs {fd}", g[k]);
        }
    }

    #[test]
    fn degenerate_populations_are_reported() {
        // Every customer's mean close to the same level: the likelihood
        // keeps growing as q and v grow together.
        let rows: Vec<(u32, f64)> = (1..60)
            .map(|i| ((i % 5 + 1) as u32, 5.0 + f64::from((i * 37) % 23)))
            .collect();
        assert!(matches!(
            fit(&rows),
            Err(GammaGammaError::NoConvergence(_) | GammaGammaError::Degenerate(_))
        ));
    }

    #[test]
    fn bad_rows_and_empty_populations_are_errors() {
        assert_eq!(fit(&[]), Err(GammaGammaError::NotIdentifiable));
        assert!(matches!(
            fit(&[(0, 1.0)]),
            Err(GammaGammaError::InvalidRow { index: 0, .. })
        ));
        assert!(matches!(
            fit(&[(1, 2.0), (2, -1.0)]),
            Err(GammaGammaError::InvalidRow { index: 1, .. })
        ));
    }
}

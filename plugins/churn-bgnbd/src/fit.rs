//! Maximum-likelihood fit of the BG/NBD parameters (r, α, a, b) over a
//! population of customer summaries (x, t_x, T).
//!
//! Method, chosen to land on the exact maximum so that results agree with
//! other implementations (`lifetimes`, the paper's Excel solver) to many
//! digits:
//! 1. Times are rescaled so that the longest T is 10 (as `lifetimes` does),
//!    which puts α near 1 whatever the time unit; α is scaled back at the
//!    end (r, a, b are unit-free).
//! 2. The mean negative log-likelihood is minimised over (ln r, ln α, ln a,
//!    ln b), so every parameter stays positive, starting from r = α = a =
//!    b = 1, by Nelder-Mead restarted from its own result until a restart
//!    no longer improves it.
//! 3. A few safeguarded Newton steps (analytic gradient, Hessian by central
//!    differences of the gradient) polish the optimum until the gradient
//!    vanishes to rounding.
//!
//! Identical (x, t_x, T) rows are merged with weights first: real
//! populations repeat the same few rows (one-time buyers of the same day)
//! thousands of times.

use serde::{Deserialize, Serialize};

use crate::model::Params;
use crate::optimize::nelder_mead;
use crate::summary::CustomerSummary;

/// What the fit found, in the time unit of the input summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub params: Params,
    /// Total log-likelihood of the population at `params`.
    pub log_likelihood: f64,
    pub customers: usize,
    /// Customers with at least one repeat purchase (x > 0).
    pub repeat_customers: usize,
    /// Objective evaluations spent by Nelder-Mead.
    pub evaluations: usize,
    /// Max-norm of the gradient of the mean log-likelihood with respect to
    /// the log-parameters at the optimum (≈ 0 when converged).
    pub gradient_norm: f64,
}

/// Why a population could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("no customers to fit")]
    Empty,
    #[error("customer #{index}: need finite 0 <= t_x <= T, got t_x={recency}, T={age}")]
    InvalidSummary { index: usize, recency: f64, age: f64 },
    #[error("no customer has a repeat purchase (or every T is 0): the BG/NBD parameters are not identifiable")]
    NotIdentifiable,
    #[error("the likelihood has no interior maximum ({0} runs off to its bound)")]
    Degenerate(&'static str),
    #[error("the optimiser did not converge (gradient norm {0:e})")]
    NoConvergence(f64),
}

/// Log-parameters beyond ±BOUND (e^30 ≈ 10^13) mean the likelihood is
/// maximised at the edge of the parameter space: a degenerate population.
const BOUND: f64 = 30.0;
const NAMES: [&str; 4] = ["r", "alpha", "a", "b"];

/// Fits (r, α, a, b) by maximum likelihood. α comes out in the time unit of
/// the summaries.
pub fn fit(population: &[CustomerSummary]) -> Result<FitReport, FitError> {
    if population.is_empty() {
        return Err(FitError::Empty);
    }
    for (index, s) in population.iter().enumerate() {
        let ok = s.recency.is_finite() && s.age.is_finite() && s.recency >= 0.0 && s.recency <= s.age;
        if !ok {
            return Err(FitError::InvalidSummary {
                index,
                recency: s.recency,
                age: s.age,
            });
        }
    }
    let max_age = population.iter().map(|s| s.age).fold(0.0, f64::max);
    let repeat_customers = population.iter().filter(|s| s.frequency > 0).count();
    if repeat_customers == 0 || max_age <= 0.0 {
        return Err(FitError::NotIdentifiable);
    }
    let scale = 10.0 / max_age;
    let data = Weighted::new(population, scale);

    let objective = |theta: &[f64]| -> f64 {
        if theta.iter().any(|t| t.abs() > BOUND) {
            return f64::INFINITY;
        }
        -data.mean_log_likelihood(&to_params(theta))
    };

    // Nelder-Mead, restarted from its own result with a fresh simplex
    // (which undoes any premature collapse) until it stops improving.
    let mut theta = vec![0.0; 4];
    let mut best = objective(&theta);
    let mut evaluations = 0;
    let mut step = 0.5;
    for _ in 0..20 {
        let m = nelder_mead(objective, &theta, step, 1e-15, 1e-10, 40_000);
        evaluations += m.evaluations;
        let moved = m.x.iter().zip(&theta).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        let improved = best - m.value;
        if m.value <= best {
            theta = m.x;
            best = m.value;
        }
        if m.converged && improved <= 1e-15 && moved <= 1e-8 {
            break;
        }
        step = 0.05;
    }

    newton_polish(&data, &mut theta);
    if let Some(i) = theta.iter().position(|t| t.abs() >= BOUND - 1.0) {
        return Err(FitError::Degenerate(NAMES[i]));
    }
    let gradient = data.gradient(&theta);
    let gradient_norm = gradient.iter().fold(0.0, |m: f64, g| m.max(g.abs()));
    if gradient.iter().any(|g| !g.is_finite()) || gradient_norm > 1e-6 {
        return Err(FitError::NoConvergence(gradient_norm));
    }
    let scaled = to_params(&theta);
    let params = Params {
        alpha: scaled.alpha / scale,
        ..scaled
    };
    let log_likelihood = population.iter().map(|s| params.log_likelihood(s)).sum();
    Ok(FitReport {
        params,
        log_likelihood,
        customers: population.len(),
        repeat_customers,
        evaluations,
        gradient_norm,
    })
}

fn to_params(theta: &[f64]) -> Params {
    Params {
        r: theta[0].exp(),
        alpha: theta[1].exp(),
        a: theta[2].exp(),
        b: theta[3].exp(),
    }
}

/// Distinct (x, t_x, T) rows with their multiplicities, times scaled.
struct Weighted {
    rows: Vec<(CustomerSummary, f64)>,
    total: f64,
}

impl Weighted {
    fn new(population: &[CustomerSummary], scale: f64) -> Self {
        let mut sorted: Vec<CustomerSummary> = population
            .iter()
            .map(|s| CustomerSummary {
                frequency: s.frequency,
                recency: s.recency * scale,
                age: s.age * scale,
            })
            .collect();
        sorted.sort_by(|p, q| {
            p.frequency
                .cmp(&q.frequency)
                .then(p.recency.total_cmp(&q.recency))
                .then(p.age.total_cmp(&q.age))
        });
        let mut rows: Vec<(CustomerSummary, f64)> = Vec::new();
        for s in sorted {
            match rows.last_mut() {
                Some((last, w)) if *last == s => *w += 1.0,
                _ => rows.push((s, 1.0)),
            }
        }
        Weighted {
            rows,
            total: population.len() as f64,
        }
    }

    fn mean_log_likelihood(&self, p: &Params) -> f64 {
        self.rows.iter().map(|(s, w)| w * p.log_likelihood(s)).sum::<f64>() / self.total
    }

    /// Gradient of the mean log-likelihood with respect to (ln r, ln α,
    /// ln a, ln b): the derivatives of equation (6) times each parameter.
    fn gradient(&self, theta: &[f64]) -> [f64; 4] {
        let Params { r, alpha, a, b } = to_params(theta);
        let mut g = [0.0; 4];
        for (s, w) in &self.rows {
            let x = f64::from(s.frequency);
            let ln_a3 = -(r + x) * (alpha + s.age).ln();
            // Weights of the two likelihood terms (A3 and A4 of the paper).
            let (w3, w4) = if s.frequency == 0 {
                (1.0, 0.0)
            } else {
                let ln_a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + s.recency).ln();
                let m = ln_a3.max(ln_a4);
                let (e3, e4) = ((ln_a3 - m).exp(), (ln_a4 - m).exp());
                (e3 / (e3 + e4), e4 / (e3 + e4))
            };
            let d_r =
                digamma(r + x) - digamma(r) + alpha.ln() - w3 * (alpha + s.age).ln() - w4 * (alpha + s.recency).ln();
            let d_alpha = r / alpha - w3 * (r + x) / (alpha + s.age) - w4 * (r + x) / (alpha + s.recency);
            let d_a = digamma(a + b) - digamma(a + b + x) + w4 / a;
            let d_b = digamma(a + b) + digamma(b + x)
                - digamma(b)
                - digamma(a + b + x)
                - if s.frequency == 0 { 0.0 } else { w4 / (b + x - 1.0) };
            for (gk, d) in g.iter_mut().zip([d_r * r, d_alpha * alpha, d_a * a, d_b * b]) {
                *gk += w * d;
            }
        }
        g.map(|v| v / self.total)
    }
}

/// Safeguarded Newton iterations on the log-parameters: a step is kept
/// only if it shrinks the gradient without lowering the likelihood (beyond
/// rounding), so polishing can never make Nelder-Mead's answer worse.
fn newton_polish(data: &Weighted, theta: &mut Vec<f64>) {
    let value = |t: &[f64]| data.mean_log_likelihood(&to_params(t));
    let norm = |g: &[f64; 4]| g.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
    for _ in 0..20 {
        let g = data.gradient(theta);
        if norm(&g) <= 1e-14 {
            return;
        }
        // Hessian columns by central differences of the analytic gradient.
        let h = 1e-5;
        let mut hess = [[0.0; 4]; 4];
        for j in 0..4 {
            let mut up = theta.clone();
            let mut down = theta.clone();
            up[j] += h;
            down[j] -= h;
            let (gu, gd) = (data.gradient(&up), data.gradient(&down));
            for i in 0..4 {
                hess[i][j] = (gu[i] - gd[i]) / (2.0 * h);
            }
        }
        // Solve H δ = -g (H is negative definite at a maximum).
        let Some(delta) = crate::optimize::solve(hess, g.map(|v| -v)) else {
            return;
        };
        let candidate: Vec<f64> = theta.iter().zip(&delta).map(|(t, d)| t + d).collect();
        if candidate.iter().any(|t| !t.is_finite() || t.abs() > BOUND) {
            return;
        }
        // The mean log-likelihood is a sum of thousands of terms, so it is
        // only known to ~1e-14: a step may "lose" that much and still be
        // the better point, which the gradient then shows.
        let (now, next) = (value(theta), value(&candidate));
        let better = next >= now - 1e-12 * (1.0 + now.abs()) && norm(&data.gradient(&candidate)) < norm(&g);
        if !better {
            return;
        }
        *theta = candidate;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ln_gamma;

    #[test]
    fn digamma_matches_known_values() {
        // ψ(1) = -γ, ψ(1/2) = -γ - 2 ln 2, ψ(10) from tables.
        let gamma = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + gamma).abs() < 1e-14);
        assert!((digamma(0.5) + gamma + 2.0 * 2f64.ln()).abs() < 1e-14);
        assert!((digamma(10.0) - 2.251_752_589_066_721).abs() < 1e-14);
        // Agrees with a central difference of ln Γ.
        let v = 0.2426;
        let fd = (ln_gamma(v + 1e-6) - ln_gamma(v - 1e-6)) / 2e-6;
        assert!((digamma(v) - fd).abs() < 1e-6);
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let pop = [
            CustomerSummary {
                frequency: 0,
                recency: 0.0,
                age: 5.0,
            },
            CustomerSummary {
                frequency: 3,
                recency: 4.0,
                age: 9.0,
            },
            CustomerSummary {
                frequency: 1,
                recency: 0.5,
                age: 10.0,
            },
        ];
        let data = Weighted::new(&pop, 1.0);
        let theta = [-0.7, 0.3, -0.2, 0.6];
        let g = data.gradient(&theta);
        for k in 0..4 {
            let (mut up, mut down) = (theta, theta);
            up[k] += 1e-6;
            down[k] -= 1e-6;
            let fd = (data.mean_log_likelihood(&to_params(&up)) - data.mean_log_likelihood(&to_params(&down))) / 2e-6;
            assert!((g[k] - fd).abs() < 1e-7, "component {k}: {} vs {fd}", g[k]);
        }
    }

    #[test]
    fn populations_without_repeat_buyers_are_rejected() {
        assert_eq!(fit(&[]), Err(FitError::Empty));
        let once = [CustomerSummary {
            frequency: 0,
            recency: 0.0,
            age: 3.0,
        }];
        assert_eq!(fit(&once), Err(FitError::NotIdentifiable));
        let bad = [CustomerSummary {
            frequency: 1,
            recency: 4.0,
            age: 3.0,
        }];
        assert!(matches!(fit(&bad), Err(FitError::InvalidSummary { index: 0, .. })));
    }
}

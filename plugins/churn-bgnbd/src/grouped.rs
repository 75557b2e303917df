//! The population's BG/NBD log-likelihood from its sufficient statistics,
//! with its closed-form gradient and Hessian, at a cost that grows with the
//! number of *distinct* (x, t_x, T) rows, not with the number of customers.
//!
//! Equation (6) of the paper splits into parts that depend on less than
//! the whole row, so each is computed once per distinct value:
//! - ln A1 + ln A2 (the four ln Γ terms and r ln α) depend on x alone:
//!   once per distinct x, times the number of customers with that x;
//! - ln(α + T) and ln(α + t_x): once per distinct T and per distinct t_x
//!   (a population measured in days has at most a few thousand of each);
//! - customers without repeat purchases contribute −r ln(α + T) only:
//!   once per distinct T;
//! - what is left per distinct (x, t_x, T) row of a repeat buyer is the
//!   log-sum-exp of A3 and A4: one `exp` and one `ln_1p`.
//!
//! Grouping identical rows is exact. [`Grouped::new`] can also round t_x
//! and T to a coarser grid first (`bin`), which is not exact: see
//! `fit_binned` in [`crate::fit`] for its measured cost.

use crate::model::{Params, digamma, ln_gamma, trigamma};
use crate::summary::CustomerSummary;

/// One distinct (x, t_x, T) row of repeat buyers (x > 0): indices into the
/// distinct-value tables and the number of customers it stands for.
#[derive(Debug, Clone, Copy)]
struct Row {
    x: u32,
    recency: u32,
    age: u32,
    weight: f64,
}

/// The population reduced to what the likelihood reads.
#[derive(Debug, Clone)]
pub(crate) struct Grouped {
    /// Distinct x values (ascending) and how many customers have each.
    xs: Vec<(f64, f64)>,
    /// Distinct T values of the whole population (ascending).
    ages: Vec<f64>,
    /// Distinct t_x values of repeat buyers (ascending).
    recencies: Vec<f64>,
    /// Customers with x = 0, per entry of `ages`.
    zero_weights: Vec<f64>,
    /// Distinct rows of repeat buyers.
    rows: Vec<Row>,
    /// Number of customers.
    pub(crate) total: f64,
    /// Σ x over all customers (to undo the time scaling of the likelihood).
    pub(crate) sum_x: f64,
}

/// The mean log-likelihood and its derivatives with respect to the
/// log-parameters θ = (ln r, ln α, ln a, ln b).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Evaluation {
    pub(crate) value: f64,
    pub(crate) gradient: [f64; 4],
    pub(crate) hessian: [[f64; 4]; 4],
}

/// Sorted distinct values of an iterator (total order on f64).
fn distinct(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|p, q| p.total_cmp(q).is_eq());
    v
}

/// Index of `value` in the sorted distinct `table` it was built from.
fn index_of(table: &[f64], value: f64) -> u32 {
    let i = table.partition_point(|v| v.total_cmp(&value).is_lt());
    // Tables hold at most one entry per customer, far below u32::MAX.
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl Grouped {
    /// Groups a validated population (0 ≤ t_x ≤ T, finite) with its times
    /// multiplied by `scale`. With `bin` > 0, t_x and T (before scaling)
    /// are first rounded to the nearest multiple of `bin` (t_x capped at
    /// T); `bin` = 0 groups exactly.
    pub(crate) fn new(population: &[CustomerSummary], scale: f64, bin: f64) -> Self {
        let snap = |v: f64| {
            if bin > 0.0 {
                (v / bin).round() * bin * scale
            } else {
                v * scale
            }
        };
        let scaled = |s: &CustomerSummary| {
            let age = snap(s.age);
            (s.frequency, snap(s.recency).min(age), age)
        };
        let xs_distinct = distinct(population.iter().map(|s| f64::from(s.frequency)));
        let ages = distinct(population.iter().map(|s| scaled(s).2));
        let recencies = distinct(population.iter().filter(|s| s.frequency > 0).map(|s| scaled(s).1));
        let mut xs: Vec<(f64, f64)> = xs_distinct.iter().map(|&x| (x, 0.0)).collect();
        let mut zero_weights = vec![0.0; ages.len()];
        let mut keys: Vec<(u32, u32, u32)> = Vec::new();
        let mut sum_x = 0.0;
        for s in population {
            let (frequency, recency, age) = scaled(s);
            let x = f64::from(frequency);
            sum_x += x;
            let xi = index_of(&xs_distinct, x);
            let ai = index_of(&ages, age);
            if let Some(slot) = xs.get_mut(xi as usize) {
                slot.1 += 1.0;
            }
            if frequency == 0 {
                if let Some(w) = zero_weights.get_mut(ai as usize) {
                    *w += 1.0;
                }
            } else {
                keys.push((xi, index_of(&recencies, recency), ai));
            }
        }
        keys.sort_unstable();
        let mut rows: Vec<Row> = Vec::new();
        for (x, recency, age) in keys {
            match rows.last_mut() {
                Some(last) if (last.x, last.recency, last.age) == (x, recency, age) => last.weight += 1.0,
                _ => rows.push(Row {
                    x,
                    recency,
                    age,
                    weight: 1.0,
                }),
            }
        }
        Grouped {
            xs,
            ages,
            recencies,
            zero_weights,
            rows,
            total: population.len() as f64,
            sum_x,
        }
    }

    /// Distinct (x, t_x, T) rows the likelihood is summed over (repeat
    /// buyers' rows plus one per distinct T of the others).
    pub(crate) fn groups(&self) -> usize {
        self.rows.len() + self.zero_weights.iter().filter(|w| **w > 0.0).count()
    }

    /// The mean log-likelihood per customer at `p` (times scaled as given
    /// to [`Grouped::new`]), with its gradient and Hessian with respect to
    /// (ln r, ln α, ln a, ln b).
    pub(crate) fn evaluate(&self, p: &Params) -> Evaluation {
        let Params { r, alpha, a, b } = *p;
        // Derivatives are accumulated with respect to (r, α, a, b) and
        // moved to the log-parameters at the end.
        let mut value = 0.0;
        let mut g = [0.0; 4];
        let mut h = [[0.0; 4]; 4];
        let (ln_alpha, ln_a) = (alpha.ln(), a.ln());

        // Terms in x alone (A1, A2 of the paper).
        let (psi_r, psi_b, psi_ab) = (digamma(r), digamma(b), digamma(a + b));
        let (tri_r, tri_b, tri_ab) = (trigamma(r), trigamma(b), trigamma(a + b));
        let base = -ln_gamma(r) + ln_gamma(a + b) - ln_gamma(b);
        for &(x, n) in &self.xs {
            value += n * (ln_gamma(r + x) + r * ln_alpha + ln_gamma(b + x) - ln_gamma(a + b + x) + base);
            let (psi_rx, psi_bx, psi_abx) = (digamma(r + x), digamma(b + x), digamma(a + b + x));
            let (tri_rx, tri_bx, tri_abx) = (trigamma(r + x), trigamma(b + x), trigamma(a + b + x));
            g[0] += n * (psi_rx - psi_r + ln_alpha);
            g[1] += n * r / alpha;
            g[2] += n * (psi_ab - psi_abx);
            g[3] += n * (psi_ab + psi_bx - psi_b - psi_abx);
            h[0][0] += n * (tri_rx - tri_r);
            h[0][1] += n / alpha;
            h[1][1] -= n * r / (alpha * alpha);
            h[2][2] += n * (tri_ab - tri_abx);
            h[2][3] += n * (tri_ab - tri_abx);
            h[3][3] += n * (tri_ab + tri_bx - tri_b - tri_abx);
        }

        // ln(α + v) and 1/(α + v) per distinct T and t_x.
        let logs = |table: &[f64]| -> Vec<(f64, f64)> {
            table.iter().map(|v| ((alpha + v).ln(), 1.0 / (alpha + v))).collect()
        };
        let ages = logs(&self.ages);
        let recencies = logs(&self.recencies);

        // Customers without repeat purchases: −r ln(α + T).
        for (&w, &(ln_t, inv_t)) in self.zero_weights.iter().zip(&ages) {
            if w > 0.0 {
                value -= w * r * ln_t;
                g[0] -= w * ln_t;
                g[1] -= w * r * inv_t;
                h[0][1] -= w * inv_t;
                h[1][1] += w * r * inv_t * inv_t;
            }
        }

        // Repeat buyers: ln(A3 + A4) with
        // ln A3 = −(r+x) ln(α+T), ln A4 = ln a − ln(b+x−1) − (r+x) ln(α+t_x).
        // Per-x constants first (x > 0 rows only; x = 0 is never indexed).
        let per_x: Vec<(f64, f64, f64)> = self
            .xs
            .iter()
            .map(|&(x, _)| {
                let inv_bx = 1.0 / (b + x - 1.0);
                (r + x, ln_a + inv_bx.ln(), inv_bx)
            })
            .collect();
        let inv_a = 1.0 / a;
        for row in &self.rows {
            let (Some(&(rx, c4, inv_bx)), Some(&(ln_t, inv_t)), Some(&(ln_tx, inv_tx))) = (
                per_x.get(row.x as usize),
                ages.get(row.age as usize),
                recencies.get(row.recency as usize),
            ) else {
                continue;
            };
            let w = row.weight;
            let l3 = -rx * ln_t;
            let l4 = c4 - rx * ln_tx;
            let d = l4 - l3;
            // log-sum-exp and the softmax weights of the two terms.
            let e = (-d.abs()).exp();
            let lse = l3.max(l4) + e.ln_1p();
            let w4 = if d > 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
            let w3 = 1.0 - w4;
            value += w * lse;
            // ∇l3 = (−ln(α+T), −(r+x)/(α+T), 0, 0),
            // ∇l4 = (−ln(α+t_x), −(r+x)/(α+t_x), 1/a, −1/(b+x−1)).
            g[0] -= w * (w3 * ln_t + w4 * ln_tx);
            g[1] -= w * rx * (w3 * inv_t + w4 * inv_tx);
            g[2] += w * w4 * inv_a;
            g[3] -= w * w4 * inv_bx;
            // ∇² lse = w3 ∇²l3 + w4 ∇²l4 + w3 w4 δ δᵀ with δ = ∇l3 − ∇l4.
            let delta = [ln_tx - ln_t, rx * (inv_tx - inv_t), -inv_a, inv_bx];
            let c = w * w3 * w4;
            h[0][1] -= w * (w3 * inv_t + w4 * inv_tx);
            h[1][1] += w * rx * (w3 * inv_t * inv_t + w4 * inv_tx * inv_tx);
            h[2][2] -= w * w4 * inv_a * inv_a;
            h[3][3] += w * w4 * inv_bx * inv_bx;
            for i in 0..4 {
                for j in i..4 {
                    h[i][j] += c * delta[i] * delta[j];
                }
            }
        }

        // Mean per customer, then the chain rule to θ = ln p:
        // ∂/∂θi = p_i ∂/∂p_i, ∂²/∂θi∂θj = p_i p_j ∂²/∂p_i∂p_j + [i=j] p_i ∂/∂p_i.
        let params = [r, alpha, a, b];
        let n = self.total;
        let mut gradient = [0.0; 4];
        let mut hessian = [[0.0; 4]; 4];
        for i in 0..4 {
            gradient[i] = params[i] * g[i] / n;
            for j in i..4 {
                let mut v = params[i] * params[j] * h[i][j] / n;
                if i == j {
                    v += gradient[i];
                }
                hessian[i][j] = v;
                hessian[j][i] = v;
            }
        }
        Evaluation {
            value: value / n,
            gradient,
            hessian,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cust(x: u32, t_x: f64, t: f64) -> CustomerSummary {
        CustomerSummary {
            frequency: x,
            recency: t_x,
            age: t,
        }
    }

    fn params(theta: [f64; 4]) -> Params {
        Params {
            r: theta[0].exp(),
            alpha: theta[1].exp(),
            a: theta[2].exp(),
            b: theta[3].exp(),
        }
    }

    fn population() -> Vec<CustomerSummary> {
        vec![
            cust(0, 0.0, 5.0),
            cust(0, 0.0, 5.0),
            cust(3, 4.0, 9.0),
            cust(1, 0.5, 10.0),
            cust(3, 4.0, 9.0),
            cust(7, 8.5, 9.0),
            cust(0, 0.0, 2.0),
            cust(1, 2.0, 2.0),
        ]
    }

    /// The grouped value is the sum of the per-customer likelihoods.
    #[test]
    fn value_is_the_mean_of_equation_6() {
        let pop = population();
        let grouped = Grouped::new(&pop, 1.0, 0.0);
        assert_eq!(grouped.groups(), 6);
        let p = params([-0.7, 0.3, -0.2, 0.6]);
        let direct: f64 = pop.iter().map(|s| p.log_likelihood(s)).sum::<f64>() / pop.len() as f64;
        let got = grouped.evaluate(&p).value;
        assert!((got - direct).abs() < 1e-13, "{got} vs {direct}");
    }

    /// Gradient and Hessian agree with central differences of the value
    /// and of the gradient.
    #[test]
    fn derivatives_match_finite_differences() {
        let grouped = Grouped::new(&population(), 1.0, 0.0);
        let theta = [-0.7, 0.3, -0.2, 0.6];
        let at = grouped.evaluate(&params(theta));
        let h = 1e-6;
        for k in 0..4 {
            let (mut up, mut down) = (theta, theta);
            up[k] += h;
            down[k] -= h;
            let (u, d) = (grouped.evaluate(&params(up)), grouped.evaluate(&params(down)));
            let fd = (u.value - d.value) / (2.0 * h);
            assert!(
                (at.gradient[k] - fd).abs() < 1e-7,
                "gradient {k}: {} vs {fd}",
                at.gradient[k]
            );
            for i in 0..4 {
                let fd = (u.gradient[i] - d.gradient[i]) / (2.0 * h);
                assert!(
                    (at.hessian[i][k] - fd).abs() < 1e-6,
                    "hessian {i},{k}: {} vs {fd}",
                    at.hessian[i][k]
                );
            }
        }
    }

    /// Binning rounds t_x and T to the grid (t_x never above T), which
    /// merges rows that were distinct.
    #[test]
    fn binning_merges_nearby_rows() {
        let pop = [cust(2, 3.1, 9.9), cust(2, 2.9, 10.1), cust(2, 9.6, 9.7)];
        assert_eq!(Grouped::new(&pop, 1.0, 0.0).groups(), 3);
        let binned = Grouped::new(&pop, 1.0, 1.0);
        assert_eq!(binned.groups(), 2);
        assert_eq!(binned.ages, [10.0]);
        assert_eq!(binned.recencies, [3.0, 10.0]);
    }
}

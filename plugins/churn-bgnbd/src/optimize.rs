//! Small dense numerical helpers shared by the BG/NBD fit and (compiled
//! into the `clv` crate through `#[path]`) its Gamma-Gamma fit: a
//! Nelder-Mead simplex minimiser (Nelder & Mead 1965, coefficients 1, 2,
//! ½, ½ as in Lagarias et al. 1998; the Gamma-Gamma fit's global search),
//! Gaussian elimination and a Cholesky solve (the Newton steps).
//!
//! Written here rather than pulled in from `argmin`: the fits are over
//! three or four unconstrained log-parameters with closed-form gradients
//! and Hessians, so a 4×4 solve is all the linear algebra they need;
//! keeping it to these few lines keeps the plugins' WebAssembly small,
//! dependency-free and bit-for-bit deterministic across targets.

/// The result of one minimisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    /// Objective evaluations used.
    pub evaluations: usize,
    /// Whether the tolerances were met before the evaluation budget ran out.
    pub converged: bool,
}

/// Minimises `f` from `start`, with an initial simplex of axis steps `step`.
/// Stops when the simplex's values differ by at most `f_tol` and its
/// vertices by at most `x_tol` (max-norm), or after `max_evaluations`.
/// `f` may return +∞ (or NaN, treated as +∞) to forbid a point.
#[allow(
    dead_code,
    reason = "used by the clv crate's Gamma-Gamma fit, which compiles this file too"
)]
pub fn nelder_mead(
    mut f: impl FnMut(&[f64]) -> f64,
    start: &[f64],
    step: f64,
    f_tol: f64,
    x_tol: f64,
    max_evaluations: usize,
) -> Minimum {
    let n = start.len();
    let mut evaluations = 0;
    let mut eval = |x: &[f64], count: &mut usize| {
        *count += 1;
        let v = f(x);
        if v.is_nan() { f64::INFINITY } else { v }
    };
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    let v0 = eval(start, &mut evaluations);
    simplex.push((start.to_vec(), v0));
    for i in 0..n {
        let mut x = start.to_vec();
        x[i] += step;
        let v = eval(&x, &mut evaluations);
        simplex.push((x, v));
    }
    let mut converged = false;
    while evaluations < max_evaluations {
        simplex.sort_by(|p, q| p.1.total_cmp(&q.1));
        let best = simplex[0].1;
        let worst = simplex[n].1;
        let spread = simplex[1..]
            .iter()
            .flat_map(|(x, _)| x.iter().zip(&simplex[0].0).map(|(a, b)| (a - b).abs()))
            .fold(0.0, f64::max);
        if (worst - best).abs() <= f_tol && spread <= x_tol {
            converged = true;
            break;
        }
        // Centroid of all vertices but the worst.
        let mut centroid = vec![0.0; n];
        for (x, _) in &simplex[..n] {
            for (c, xi) in centroid.iter_mut().zip(x) {
                *c += xi / n as f64;
            }
        }
        let along = |t: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[n].0)
                .map(|(c, w)| c + t * (c - w))
                .collect()
        };
        let reflected = along(1.0);
        let fr = eval(&reflected, &mut evaluations);
        if fr < simplex[0].1 {
            let expanded = along(2.0);
            let fe = eval(&expanded, &mut evaluations);
            simplex[n] = if fe < fr { (expanded, fe) } else { (reflected, fr) };
            continue;
        }
        if fr < simplex[n - 1].1 {
            simplex[n] = (reflected, fr);
            continue;
        }
        // Contract outside (towards the reflection) or inside.
        let (contracted, fc) = if fr < worst {
            let x = along(0.5);
            let v = eval(&x, &mut evaluations);
            (x, v)
        } else {
            let x = along(-0.5);
            let v = eval(&x, &mut evaluations);
            (x, v)
        };
        if fc < fr.min(worst) {
            simplex[n] = (contracted, fc);
            continue;
        }
        // Shrink everything towards the best vertex.
        let best_x = simplex[0].0.clone();
        for vertex in simplex.iter_mut().skip(1) {
            let x: Vec<f64> = best_x.iter().zip(&vertex.0).map(|(b, v)| b + 0.5 * (v - b)).collect();
            let v = eval(&x, &mut evaluations);
            *vertex = (x, v);
        }
    }
    simplex.sort_by(|p, q| p.1.total_cmp(&q.1));
    let (x, value) = simplex.swap_remove(0);
    Minimum {
        x,
        value,
        evaluations,
        converged,
    }
}

/// Solves `m x = rhs` by Gaussian elimination with partial pivoting (the
/// Newton steps of the Gamma-Gamma fit); `None` when `m` is
/// singular or the solution is not finite.
#[allow(
    dead_code,
    reason = "used by the clv crate's Gamma-Gamma fit, which compiles this file too"
)]
pub(crate) fn solve<const N: usize>(mut m: [[f64; N]; N], mut rhs: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        rhs.swap(col, pivot);
        for row in col + 1..N {
            let factor = m[row][col] / m[col][col];
            let pivot_row = m[col];
            for (dst, src) in m[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *dst -= factor * src;
            }
            rhs[row] -= factor * rhs[col];
        }
    }
    let mut x = [0.0; N];
    for row in (0..N).rev() {
        let tail: f64 = (row + 1..N).map(|k| m[row][k] * x[k]).sum();
        x[row] = (rhs[row] - tail) / m[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Solves `m x = rhs` for a symmetric positive definite `m` by Cholesky
/// factorisation; `None` when `m` is not positive definite (to rounding)
/// or the solution is not finite. The BG/NBD fit's damped Newton step
/// uses the failure as its test of definiteness.
pub(crate) fn cholesky_solve<const N: usize>(m: [[f64; N]; N], rhs: [f64; N]) -> Option<[f64; N]> {
    let mut l = [[0.0; N]; N];
    for i in 0..N {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = m[i][i] - dot;
                // Relative to the diagonal: a pivot lost in rounding is a
                // zero pivot.
                if d.is_nan() || d <= 0.0 || d <= 1e-14 * m[i][i].abs() {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (m[i][j] - dot) / l[j][j];
            }
        }
    }
    // L y = rhs, then Lᵀ x = y.
    let mut y = [0.0; N];
    for i in 0..N {
        let dot: f64 = (0..i).map(|k| l[i][k] * y[k]).sum();
        y[i] = (rhs[i] - dot) / l[i][i];
    }
    let mut x = [0.0; N];
    for i in (0..N).rev() {
        let dot: f64 = (i + 1..N).map(|k| l[k][i] * x[k]).sum();
        x[i] = (y[i] - dot) / l[i][i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_the_rosenbrock_function() {
        let rosenbrock = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let m = nelder_mead(rosenbrock, &[-1.2, 1.0], 0.5, 1e-15, 1e-10, 10_000);
        assert!(m.converged);
        assert!((m.x[0] - 1.0).abs() < 1e-7 && (m.x[1] - 1.0).abs() < 1e-7, "{m:?}");
    }

    #[test]
    fn cholesky_solves_definite_systems_and_refuses_the_others() {
        let m = [[4.0, 2.0, 0.6], [2.0, 5.0, 1.0], [0.6, 1.0, 3.0]];
        let x = cholesky_solve(m, [1.0, 2.0, 3.0]).unwrap();
        for (row, want) in m.iter().zip([1.0, 2.0, 3.0]) {
            let got: f64 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!((got - want).abs() < 1e-12);
        }
        assert_eq!(cholesky_solve([[1.0, 2.0], [2.0, 1.0]], [1.0, 1.0]), None);
        assert_eq!(cholesky_solve([[1.0, 1.0], [1.0, 1.0]], [1.0, 1.0]), None);
    }

    #[test]
    fn forbidden_points_are_avoided() {
        let f = |x: &[f64]| {
            if x[0] < 0.5 { f64::NAN } else { (x[0] - 2.0).powi(2) }
        };
        let m = nelder_mead(f, &[1.0], 0.25, 1e-15, 1e-10, 10_000);
        assert!((m.x[0] - 2.0).abs() < 1e-7);
    }
}

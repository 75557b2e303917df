//! Rank-based quintile scores 1-5 that give equal values equal scores.
//!
//! The common recipe is pandas'
//! `pd.qcut(x.rank(method="first"), 5, labels=[1, 2, 3, 4, 5])`: rank the n
//! customers 1..n, cut the ranks at their 20/40/60/80 % quantiles
//! e_k = 1 + (n-1)·k/5 (linear interpolation), and score rank ρ as the bin
//! it falls in (bins are right-closed: ρ ≤ e_1 scores 1, e_1 < ρ ≤ e_2
//! scores 2, ...). `method="first"` breaks ties by order of appearance, so
//! two customers with the same spend could get different scores, and one
//! customer's score would depend on row order.
//!
//! This crate keeps the recipe's edges but ranks ties by `method="min"`:
//! every member of a tie group gets the score the recipe gives the group's
//! first member. In pandas:
//!
//! ```text
//! edges = np.quantile(np.arange(1, n + 1), [0, .2, .4, .6, .8, 1])
//! score = pd.cut(x.rank(method="min"), edges, labels=[1, 2, 3, 4, 5],
//!                include_lowest=True)
//! ```
//!
//! Without ties this is exactly the common recipe. Ties are resolved
//! downwards (conservatively): if half the customers bought once, they all
//! get F = 1.
//!
//! As value thresholds (which is what the model stores, so that a customer
//! outside the fitted population can be scored too): with the values sorted
//! worst to best as v_0 ≤ … ≤ v_{n-1}, let t_k = v_{⌊(n-1)·k/5⌋} for
//! k = 1..4; then score(v) = 1 + #{k : v is strictly better than t_k}.
//! (Min-rank ρ > e_k ⟺ more than e_k - 1 values are worse than v ⟺ at
//! least ⌊(n-1)k/5⌋ + 1 are ⟺ v beats v_{⌊(n-1)k/5⌋}.) The index is
//! computed in integers, so no rounding of e_k can move a customer.

/// Zero-based positions of the four thresholds in a population of `n`
/// values sorted worst to best; `None` for an empty population.
pub fn threshold_positions(n: usize) -> Option<[usize; 4]> {
    if n == 0 {
        return None;
    }
    Some([1, 2, 3, 4].map(|k| (n - 1) * k / 5))
}

/// The four thresholds of values where higher is better (frequency,
/// monetary).
pub fn thresholds_higher_better<T: Ord + Copy>(values: &[T]) -> Option<[T; 4]> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    threshold_positions(sorted.len()).map(|p| p.map(|i| sorted[i]))
}

/// The four thresholds of values where lower is better (days since the last
/// purchase): sorted worst (largest) first.
pub fn thresholds_lower_better<T: Ord + Copy>(values: &[T]) -> Option<[T; 4]> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    threshold_positions(sorted.len()).map(|p| p.map(|i| sorted[i]))
}

/// 1-5: one plus the number of thresholds `v` exceeds.
pub fn score_higher_better<T: Ord>(v: T, thresholds: &[T; 4]) -> u8 {
    1 + thresholds.iter().filter(|t| v > **t).count() as u8
}

/// 1-5: one plus the number of thresholds `v` is below.
pub fn score_lower_better<T: Ord>(v: T, thresholds: &[T; 4]) -> u8 {
    1 + thresholds.iter().filter(|t| v < **t).count() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(values: &[i64]) -> Vec<u8> {
        let t = thresholds_higher_better(values).unwrap();
        values.iter().map(|v| score_higher_better(*v, &t)).collect()
    }

    #[test]
    fn distinct_values_match_the_common_pandas_recipe() {
        // pd.qcut(pd.Series(x).rank(method="first"), 5, labels=[1..5]) for
        // x = [50, 10, 40, 20, 30, 90, 70, 60, 80, 100, 5, 45] (n = 12,
        // edges 1, 3.2, 5.4, 7.6, 9.8, 12).
        let x = [50, 10, 40, 20, 30, 90, 70, 60, 80, 100, 5, 45];
        assert_eq!(scores(&x), vec![3, 1, 2, 1, 2, 5, 4, 4, 5, 5, 1, 3]);
    }

    #[test]
    fn ties_get_the_score_of_their_first_member() {
        // pandas, n = 10, edges 1, 2.8, 4.6, 6.4, 8.2, 10:
        // x.rank(method="min") = [1, 1, 1, 1, 1, 6, 6, 8, 9, 10]
        // pd.cut(..., edges, include_lowest=True) = [1, 1, 1, 1, 1, 3, 3, 4, 5, 5]
        // while the "first" recipe would split the five 1s into 1, 1, 2, 2, 3.
        let x = [1, 1, 1, 1, 1, 2, 2, 3, 4, 7];
        assert_eq!(scores(&x), vec![1, 1, 1, 1, 1, 3, 3, 4, 5, 5]);
    }

    #[test]
    fn lower_is_better_mirrors_higher_is_better() {
        // Recency in days: 0 is best. Same as scoring -days higher-better.
        let days = [0_i64, 3, 3, 10, 45, 45, 45, 200, 364, 1];
        let t = thresholds_lower_better(&days).unwrap();
        let negated: Vec<i64> = days.iter().map(|d| -d).collect();
        let tn = thresholds_higher_better(&negated).unwrap();
        for d in days {
            assert_eq!(score_lower_better(d, &t), score_higher_better(-d, &tn));
        }
        // pandas: (-days).rank(method="min") cut at 1, 2.8, 4.6, 6.4, 8.2, 10.
        let r: Vec<u8> = days.iter().map(|d| score_lower_better(*d, &t)).collect();
        assert_eq!(r, vec![5, 4, 4, 3, 2, 2, 2, 1, 1, 5]);
    }

    #[test]
    fn small_populations() {
        assert_eq!(threshold_positions(0), None);
        assert_eq!(scores(&[7]), vec![1]);
        assert_eq!(scores(&[7, 9]), vec![1, 5]);
        assert_eq!(scores(&[1, 2, 3]), vec![1, 3, 5]);
        // Customers outside the fitted population score by the thresholds.
        let t = thresholds_higher_better(&[10, 20, 30, 40, 50]).unwrap();
        assert_eq!(
            [0, 10, 15, 45, 1000].map(|v| score_higher_better(v, &t)),
            [1, 1, 2, 5, 5]
        );
    }
}

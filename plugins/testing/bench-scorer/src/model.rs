//! The benchmark's scoring function, shared verbatim with its native twin:
//! the native benchmark includes this very file
//! (`#[path = ".../plugins/testing/bench-scorer/src/model.rs"] mod model;`)
//! so that "wasm vs native" compares the same code. It has no dependencies
//! and must keep none.
//!
//! value = Σ over interactions, in order, of `amount_minor.unwrap_or(0) as f64 * 0.01`,
//! plus the number of interactions. f64 arithmetic is IEEE 754 on both
//! sides (no fused multiply-add in Rust without asking), so wasm and native
//! results are bit-identical.

/// Scores one history given each interaction's amount in minor units
/// (`None` for interactions without an amount), in history order.
pub fn bench_value(amounts_minor: impl IntoIterator<Item = Option<i64>>) -> f64 {
    let mut sum = 0.0_f64;
    let mut count = 0_u64;
    for amount in amounts_minor {
        sum += amount.unwrap_or(0) as f64 * 0.01;
        count += 1;
    }
    sum + count as f64
}
